//go:build !amd64 || purego

package dq

func (f *subs) refit(on *[16]bool, ns int, omega float64) { f.refitGo(on, omega) }

func (f *subs) chooseCodes(ns int, d, dmin float64, pmax int32) {
	f.chooseCodesGo(ns, d, dmin, pmax)
}
