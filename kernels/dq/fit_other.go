//go:build !amd64 || purego

package dq

func (f *subs) refit(on *[16]bool, ns int, omega float64) { f.refitGo(on, omega) }

func (f *subs) chooseCodes(ns int, d, dmin float64, pmax int32) {
	f.chooseCodesGo(ns, d, dmin, pmax)
}

func (f *subs) keepBest(best *saved, on *[16]bool, ns int) { f.keepBestGo(best, on, ns) }

func (f *subs) start(at *pass, ns int, st start, qmax float32) { f.startGo(at, ns, st, qmax) }
