package ref

// lsq's and clip's searches as they were (kernels/lsq, kernels/clip).

// LSQ is lsq's GroupParams (w nil) or WeightedGroupParams.
func LSQ(x, w []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	return ForEachWeightedGroup(x, w, bits, groupSize, scales, mins, base, lsqFit)
}

// Clip is clip's GroupParams (w nil) or WeightedGroupParams.
func Clip(x, w []float32, bits, groupSize int, scales, mins []uint16, base int64) error {
	return ForEachWeightedGroup(x, w, bits, groupSize, scales, mins, base, clipFit)
}

type lsqSetting struct {
	beta, beta128 float32
	shrunk        bool // evaluate the shrunk start besides min/max
	passes        int
	omega         float64
}

var lsqSettings = [9]lsqSetting{ // by bit width
	2: {beta: 0.6, beta128: 0.6, shrunk: true, passes: 1, omega: 2},
	4: {beta: 0.95, beta128: 0.9, shrunk: true, passes: 1, omega: 3},
	8: {passes: 0, omega: 1},
}

func lsqFit(x, w []float32, bits int, lo, hi float32) (uint16, uint16) {
	cfg := &lsqSettings[bits]
	beta := cfg.beta
	if len(x) >= 128 {
		beta = cfg.beta128
	}
	s := NewSearch(x, w, bits)
	var a, b Stats
	start := &a
	sh, mh := Shrink(lo, hi, bits, 1) // minmax's params
	s.Try(start, sh, mh)
	if cfg.shrunk {
		sh, mh = Shrink(lo, hi, bits, beta)
		if s.Try(&b, sh, mh) {
			start = &b
		}
	}
	s.RefineFrom(start, cfg.passes, cfg.omega, true)
	return s.Best.ScaleH, s.Best.MinH
}

type clipSetting struct {
	grid   []float32
	top    int
	passes int
	omega  float64
}

var clipSettings = [9]clipSetting{ // by bit width
	2: {grid: []float32{0.4, 0.55, 0.7, 1}, top: 2, passes: 5, omega: 2},
	4: {grid: []float32{0.85, 0.9, 0.95, 1}, top: 2, passes: 3, omega: 2},
	8: {grid: []float32{0.98, 1}, top: 1, passes: 2, omega: 2},
}

func clipFit(x, w []float32, bits int, lo, hi float32) (uint16, uint16) {
	cfg := &clipSettings[bits]
	s := NewSearch(x, w, bits)
	var pts [8]Stats
	n := 0
	for _, beta := range cfg.grid {
		sh, mh := Shrink(lo, hi, bits, beta)
		s.Try(&pts[n], sh, mh)
		n++
	}
	for k := 0; k < cfg.top && k < n; k++ {
		b := k // selection: the k-th best grid point
		for j := k + 1; j < n; j++ {
			if pts[j].Err < pts[b].Err {
				b = j
			}
		}
		pts[k], pts[b] = pts[b], pts[k]
		s.RefineFrom(&pts[k], cfg.passes, cfg.omega, false)
	}
	best := s.Best
	s.Accept(&best)
	return s.Best.ScaleH, s.Best.MinH
}
