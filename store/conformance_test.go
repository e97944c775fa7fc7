package store_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/store/storetest"
)

// TestConformance runs the backend-neutral suite on the local store.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		dir := t.TempDir()
		return storetest.Backend{
			Open: func(t *testing.T) store.Store {
				l, err := store.OpenLocal(dir, zerolog.Nop())
				if err != nil {
					t.Fatal(err)
				}
				return l
			},
			Leftovers: func(t *testing.T) []string {
				var out []string
				for _, d := range []string{"staging", "trash"} {
					ents, err := os.ReadDir(filepath.Join(dir, d))
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range ents {
						out = append(out, d+"/"+e.Name())
					}
				}
				return out
			},
		}
	})
}
