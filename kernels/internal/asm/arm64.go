package main

import "bytes"

func arm64EvalLanes() []byte {
	var b bytes.Buffer
	header(&b, "!purego")
	return b.Bytes()
}
