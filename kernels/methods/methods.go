// Package methods is the one place that lists ArrowQuant's quantization
// methods: Default builds the kernels.Methods set holding every one of
// them, as arrow-go's GetFunctionRegistry registers every function family
// it has. A binary has exactly these methods, whatever else it imports.
// To add a method, write its package (see kernels/method_test.go) and add
// it to the list below.
package methods

import (
	"sync"

	"github.com/arrowquant/arrowquant/kernels"
	"github.com/arrowquant/arrowquant/kernels/clip"
	"github.com/arrowquant/arrowquant/kernels/dq"
	"github.com/arrowquant/arrowquant/kernels/lsq"
	"github.com/arrowquant/arrowquant/kernels/q80"
)

// All lists every method, in the order they were introduced.
func All() []kernels.Method {
	return []kernels.Method{kernels.MinMax, lsq.Method, clip.Method, dq.Method, q80.Method}
}

// Default is the set of All's methods, built once.
var Default = sync.OnceValue(func() *kernels.Methods {
	s, err := kernels.NewMethods(All()...)
	if err != nil {
		panic(err) // a malformed method in the list above: a bug caught by this package's test
	}
	return s
})
