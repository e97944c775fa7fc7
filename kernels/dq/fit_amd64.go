//go:build !purego

package dq

// refit and chooseCodes run four sub-blocks per AVX2 vector
// (fit_amd64.s), with refitGo's and chooseCodesGo's float64 operations.

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

//go:noescape
func refitAVX2(f *subs, on *[16]bool, groups int, omega float64, relax bool)

//go:noescape
func chooseCodesAVX2(f *subs, groups int, id, idm, pm float64, df, dmf float32)
