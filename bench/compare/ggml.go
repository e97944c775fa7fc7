//go:build llamacpp

package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <stddef.h>

typedef size_t (*aq_quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start,
                                       int64_t nrows, int64_t n_per_row, const float *imatrix);
typedef void (*aq_dequantize_row_fn)(const void *x, float *y, int64_t k);
typedef size_t (*aq_size_fn)(int type);
typedef int64_t (*aq_blck_fn)(int type);

static size_t aq_quantize_chunk(void *fn, int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row) {
	return ((aq_quantize_chunk_fn)fn)(type, src, dst, 0, nrows, n_per_row, NULL);
}
static void aq_dequantize_row(void *fn, const void *x, float *y, int64_t k) {
	((aq_dequantize_row_fn)fn)(x, y, k);
}
static size_t aq_type_size(void *fn, int type) { return ((aq_size_fn)fn)(type); }
static int64_t aq_blck_size(void *fn, int type) { return ((aq_blck_fn)fn)(type); }
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// ggml is llama.cpp's libggml-base, opened at run time (dlopen), so only
// this benchmark, built with -tags llamacpp, ever needs llama.cpp.
type ggml struct {
	path                               string
	quantizeChunk, typeSize, blockSize unsafe.Pointer
	dequantize                         map[string]unsafe.Pointer // by ggml type name
}

// openGGML loads libggml-base.so and the symbols the comparison calls.
func openGGML(path string) (*ggml, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, fmt.Errorf("dlopen %s: %s", path, C.GoString(C.dlerror()))
	}
	sym := func(name string) (unsafe.Pointer, error) {
		cn := C.CString(name)
		defer C.free(unsafe.Pointer(cn))
		p := C.dlsym(h, cn)
		if p == nil {
			return nil, fmt.Errorf("%s: no symbol %s", path, name)
		}
		return p, nil
	}
	g := &ggml{path: path, dequantize: map[string]unsafe.Pointer{}}
	var err error
	for _, s := range []struct {
		dst  *unsafe.Pointer
		name string
	}{{&g.quantizeChunk, "ggml_quantize_chunk"}, {&g.typeSize, "ggml_type_size"}, {&g.blockSize, "ggml_blck_size"}} {
		if *s.dst, err = sym(s.name); err != nil {
			return nil, err
		}
	}
	for _, t := range ggmlTypes {
		if g.dequantize[t.name], err = sym(t.dequantize); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// ggmlType is a llama.cpp block type the comparison uses.
type ggmlType struct {
	name       string // "Q4_K"
	id         int    // enum ggml_type (ggml.h)
	dequantize string // its dequantize_row_* symbol
}

var ggmlTypes = []ggmlType{
	{"Q2_K", 10, "dequantize_row_q2_K"},
	{"Q4_0", 2, "dequantize_row_q4_0"},
	{"Q4_K", 12, "dequantize_row_q4_K"},
	{"Q4_1", 3, "dequantize_row_q4_1"},
	{"Q6_K", 14, "dequantize_row_q6_K"},
	{"Q8_0", 8, "dequantize_row_q8_0"},
}

func lookupType(name string) ggmlType {
	for _, t := range ggmlTypes {
		if t.name == name {
			return t
		}
	}
	panic("unknown ggml type " + name)
}

// rowBytes is the size of n elements of t (ggml_type_size / ggml_blck_size).
func (g *ggml) rowBytes(t ggmlType, n int) int {
	bs := int(C.aq_blck_size(g.blockSize, C.int(t.id)))
	return n / bs * int(C.aq_type_size(g.typeSize, C.int(t.id)))
}

// quantize runs ggml_quantize_chunk(t, x, dst, 0, len(x)/row, row, NULL)
// on the calling thread: what llama-quantize runs per tensor without an
// importance matrix.
func (g *ggml) quantize(t ggmlType, x []float32, row int, dst []byte) error {
	want := g.rowBytes(t, len(x))
	if len(dst) != want || len(x)%row != 0 {
		return fmt.Errorf("ggml quantize %s: %d elements in rows of %d into %d bytes (want %d)", t.name, len(x), row, len(dst), want)
	}
	got := C.aq_quantize_chunk(g.quantizeChunk, C.int(t.id), (*C.float)(unsafe.Pointer(&x[0])), unsafe.Pointer(&dst[0]), C.int64_t(len(x)/row), C.int64_t(row))
	if int(got) != want {
		return fmt.Errorf("ggml_quantize_chunk %s wrote %d bytes, want %d", t.name, got, want)
	}
	return nil
}

// dequantizeRow runs dequantize_row_<t>(blocks, y, len(y)).
func (g *ggml) dequantizeRow(t ggmlType, blocks []byte, y []float32) {
	C.aq_dequantize_row(g.dequantize[t.name], unsafe.Pointer(&blocks[0]), (*C.float)(unsafe.Pointer(&y[0])), C.int64_t(len(y)))
}
