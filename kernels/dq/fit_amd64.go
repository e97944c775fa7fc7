//go:build !purego

package dq

// start runs eight sub-blocks per AVX2 vector, refit, keepBest and
// chooseCodes four (fit_amd64.s), each with its Go twin's float32 and
// float64 operations.

func (f *subs) refit(on *[16]bool, ns int, omega float64) {
	if useAVX2 {
		refitAVX2(f, on, (ns+3)/4, omega, omega != 1)
		return
	}
	f.refitGo(on, omega)
}

func (f *subs) chooseCodes(ns int, d, dmin float64, pmax int32) {
	if !useAVX2 {
		f.chooseCodesGo(ns, d, dmin, pmax)
		return
	}
	id, idm := codeSteps(d, dmin)
	chooseCodesAVX2(f, (ns+3)/4, id, idm, float64(pmax), float32(d), float32(dmin))
}

func (f *subs) keepBest(best *saved, on *[16]bool, ns int) {
	if useAVX2 {
		keepBestAVX2(f, best, on, (ns+3)/4)
		return
	}
	f.keepBestGo(best, on, ns)
}

func (f *subs) start(at *pass, ns int, st start, qmax float32) {
	if !useAVX2 {
		f.startGo(at, ns, st, qmax)
		return
	}
	startAVX2(f, at, (ns+7)/8, st.beta, qmax, st.oneSided)
	for j := range ns {
		at.on[j] = !f.done[j]
	}
}

//go:noescape
func startAVX2(f *subs, at *pass, groups int, beta, qmax float32, oneSided bool)

//go:noescape
func keepBestAVX2(f *subs, best *saved, on *[16]bool, groups int)

//go:noescape
func refitAVX2(f *subs, on *[16]bool, groups int, omega float64, relax bool)

//go:noescape
func chooseCodesAVX2(f *subs, groups int, id, idm, pm float64, df, dmf float32)
