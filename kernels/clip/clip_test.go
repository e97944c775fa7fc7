package clip_test

import (
	"testing"

	"github.com/arrowquant/arrowquant/kernels/clip"
	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
)

func TestMethod(t *testing.T) {
	methodtest.Run(t, clip.Name, clip.GroupParams, methodtest.Options{
		// The grid holds the min/max params at every bit width.
		NoWorseThanMinMax: func(int) bool { return true },
	})
}

func TestWeighted(t *testing.T) { methodtest.Weighted(t, clip.Name) }
