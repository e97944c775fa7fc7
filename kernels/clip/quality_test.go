package clip_test

import (
	"sync"
	"testing"

	"github.com/arrowquant/arrowquant/kernels/clip"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
	"github.com/arrowquant/arrowquant/kernels/lsq"
)

var normal = sync.OnceValue(func() []float32 { return methodtest.Normal(1<<21, 78) })

// clip meets the quality targets on 2M seeded N(0,1) samples, INT2's
// with room to spare.
func clipTarget(t *testing.T, bits, groupSize int, minCosine float64) {
	_, sim := methodtest.Quality(t, clip.GroupParams, normal(), bits, groupSize)
	t.Logf("INT%d g%d: cosine %.6f rel MSE %.5f", bits, groupSize, sim.Cosine(), sim.RelMSE())
	if cos := sim.Cosine(); cos < minCosine {
		t.Errorf("INT%d g%d: cosine %.6f < %v", bits, groupSize, cos, minCosine)
	}
}

func TestClipINT2G256(t *testing.T) { clipTarget(t, 2, 256, 0.940) }
func TestClipINT2G128(t *testing.T) { clipTarget(t, 2, 128, 0.942) }
func TestClipINT4G128(t *testing.T) { clipTarget(t, 4, 128, 0.9955) }
func TestClipINT8G64(t *testing.T)  { clipTarget(t, 8, 64, 0.99995) }

// clip's wider search ends below lsq's total error at every width.
func TestClipBeatsLSQ(t *testing.T) {
	for _, x := range [][]float32{methodtest.Normal(1<<17, 5), methodtest.Laplace(1<<17, 6)} {
		for _, bits := range []int{2, 4, 8} {
			_, c := methodtest.Quality(t, clip.GroupParams, x, bits, 128)
			_, l := methodtest.Quality(t, lsq.GroupParams, x, bits, 128)
			if c.Err2 >= l.Err2 {
				t.Errorf("INT%d: clip squared error %v, lsq %v", bits, c.Err2, l.Err2)
			}
		}
	}
}
