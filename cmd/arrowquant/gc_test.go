package main

import (
	"runtime/debug"
	"testing"
)

// pull and serve raise the collector's target unless GOGC says otherwise.
func TestRelaxGC(t *testing.T) {
	old := debug.SetGCPercent(25)
	defer debug.SetGCPercent(old)
	t.Setenv("GOGC", "")
	relaxGC(streamGCPercent)
	if got := debug.SetGCPercent(25); got != streamGCPercent {
		t.Errorf("GC percent %d after relaxGC, want %d", got, streamGCPercent)
	}
	t.Setenv("GOGC", "50")
	relaxGC(serveGCPercent)
	if got := debug.SetGCPercent(25); got != 25 {
		t.Errorf("GC percent %d with GOGC set, want it left at 25", got)
	}
}
