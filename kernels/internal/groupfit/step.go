package groupfit

// stepArgs are the lanes' inputs to Step and the float32 (s, m) the
// vector kernel rounds to fp16 (its layout is the kernel's).
type stepArgs struct {
	n, q, qq, r, rq, scale, min, omega [Lanes]float64
	s32, m32                           [Lanes]float32
}

// stepLanes is Step(base[k], om[k]) for every lane k of mask: the params
// into sh[k], mh[k] and ok's bit k. Lanes outside mask are left alone.
func (b *Batch) stepLanes(base *[Lanes]*Stats, om *[Lanes]float64, mask Mask, sh, mh *[Lanes]uint16) (ok Mask) {
	if !stepVector {
		for k := 0; k < b.n; k++ {
			if mask&(1<<k) == 0 {
				continue
			}
			var good bool
			if sh[k], mh[k], good = Step(base[k], om[k]); good {
				ok |= 1 << k
			}
		}
		return ok
	}
	a := &b.step
	gatherStep(base, om, mask&b.All(), a)
	var s, m [Lanes]uint16
	// One weighted flag for all lanes: their Stats come from this batch's
	// evaluations, weighted as the batch is.
	inRange := Mask(stepLanesVec(a, b.weighted, &s, &m))
	for k := 0; k < b.n; k++ {
		bit := Mask(1) << k
		if mask&bit == 0 {
			continue
		}
		sh[k], mh[k] = 0, 0 // Step's out-of-range params
		if inRange&bit != 0 {
			sh[k], mh[k] = s[k], m[k]
			if ValidParams(s[k], m[k]) {
				ok |= bit
			}
		}
	}
	return ok
}

// gatherStepGo is gatherStep in Go: the Step inputs of the lanes of mask
// from *base[k], harmless ones (N 1, Scale 1, the rest 0) elsewhere.
func gatherStepGo(base *[Lanes]*Stats, om *[Lanes]float64, mask Mask, a *stepArgs) {
	for k := range Lanes {
		if mask&(1<<k) == 0 { // harmless inputs
			a.n[k], a.q[k], a.qq[k], a.r[k], a.rq[k] = 1, 0, 0, 0, 0
			a.scale[k], a.min[k], a.omega[k] = 1, 0, 1
			continue
		}
		st := base[k]
		a.n[k], a.q[k], a.qq[k], a.r[k], a.rq[k] = st.N, st.Q, st.QQ, st.R, st.RQ
		a.scale[k], a.min[k], a.omega[k] = float64(st.Scale), float64(st.Min), om[k]
	}
}
