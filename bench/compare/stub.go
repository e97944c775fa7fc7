//go:build !llamacpp

// Command compare measures ArrowQuant's quantizers against llama.cpp's in
// one process run. It needs llama.cpp's libggml-base and cgo, so it is
// built only with the llamacpp tag; run it with `make compare`.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "compare: built without llama.cpp; run `make compare` (go run -tags llamacpp ./bench/compare)")
	os.Exit(2)
}
