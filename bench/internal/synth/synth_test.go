package synth

import "testing"

// The digests of the data make quality quantized before this package
// existed (its generator, moved here unchanged): a change to Datasets
// changes every published table.
func TestDatasetsStable(t *testing.T) {
	want := []string{"d99c4026231f0fa4", "abf239d84fe3f0ad", "9a2d166e2dfbda83", "fe6b1f0c632aadd8"}
	for i, d := range Datasets(4096, 64) {
		if got := d.Digest(); got != want[i] {
			t.Errorf("%s: digest %s, want %s", d.Name, got, want[i])
		}
		if len(d.X)%d.Row != 0 {
			t.Errorf("%s: %d elements in rows of %d", d.Name, len(d.X), d.Row)
		}
	}
}
