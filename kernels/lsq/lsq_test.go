package lsq_test

import (
	"testing"

	"github.com/arrowquant/arrowquant/kernels/internal/methodtest"
	"github.com/arrowquant/arrowquant/kernels/lsq"
)

func TestMethod(t *testing.T) {
	methodtest.Run(t, lsq.Name, lsq.GroupParams, methodtest.Options{
		// Every bit width evaluates the min/max params as a start.
		NoWorseThanMinMax: func(int) bool { return true },
	})
}

func TestWeighted(t *testing.T) { methodtest.Weighted(t, lsq.Name) }
