package calib

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/apache/thrift/lib/go/thrift"
)

// checkParquetFooter checks the one thing of a Parquet footer that
// arrow-go (v18.8.0) turns into an unbounded allocation before anyone can
// look at it: a schema element's num_children, which sizes
// make([]schema.Node, 0, n) in schema.FromParquet. Up to 2^31-1 asks for
// 32 GB, and a failed allocation of that size kills the process. A schema
// in pre-order cannot have more children than elements after it, so
// that is the bound. A footer that does not parse is left for arrow-go
// to refuse.
func checkParquetFooter(r io.ReaderAt, size int64) error {
	var tail [8]byte
	if size < 12 {
		return nil
	}
	if _, err := r.ReadAt(tail[:], size-8); err != nil || string(tail[4:]) != "PAR1" {
		return nil
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	if n <= 0 || n > size-12 {
		return nil
	}
	footer := make([]byte, n) // at most the file's size
	if _, err := r.ReadAt(footer, size-8-n); err != nil {
		return nil
	}
	children, err := schemaChildren(footer)
	if err != nil {
		return nil
	}
	for i, c := range children {
		if c < 0 || int64(c) > int64(len(children)-1-i) {
			return fmt.Errorf("schema element %d claims %d children, %d elements follow it", i, c, len(children)-1-i)
		}
	}
	return nil
}

// schemaChildren reads FileMetaData.schema (field 2, list<SchemaElement>)
// from a thrift compact footer and returns each element's num_children
// (field 5, i32; 0 when absent).
func schemaChildren(footer []byte) ([]int32, error) {
	ctx := context.Background()
	trans := thrift.NewTMemoryBufferLen(len(footer))
	trans.Buffer = bytes.NewBuffer(footer)
	p := thrift.NewTCompactProtocolConf(trans, &thrift.TConfiguration{})
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return nil, err
	}
	for {
		_, typ, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return nil, err
		}
		if typ == thrift.STOP {
			return nil, nil // no schema: arrow-go refuses the file
		}
		if id != 2 || typ != thrift.LIST {
			if err := thrift.SkipDefaultDepth(ctx, p, typ); err != nil {
				return nil, err
			}
			continue
		}
		et, n, err := p.ReadListBegin(ctx)
		if err != nil {
			return nil, err
		}
		if et != thrift.STRUCT {
			return nil, fmt.Errorf("schema list of %v", et)
		}
		out := make([]int32, 0, min(n, len(footer))) // each element takes at least a byte
		for i := 0; i < n; i++ {
			c, err := numChildren(ctx, p)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, nil
	}
}

// numChildren reads one SchemaElement and returns its num_children.
func numChildren(ctx context.Context, p thrift.TProtocol) (int32, error) {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return 0, err
	}
	var c int32
	for {
		_, typ, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return 0, err
		}
		if typ == thrift.STOP {
			return c, p.ReadStructEnd(ctx)
		}
		if id == 5 && typ == thrift.I32 {
			if c, err = p.ReadI32(ctx); err != nil {
				return 0, err
			}
		} else if err := thrift.SkipDefaultDepth(ctx, p, typ); err != nil {
			return 0, err
		}
		if err := p.ReadFieldEnd(ctx); err != nil {
			return 0, err
		}
	}
}
