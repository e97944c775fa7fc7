package quant

import "github.com/apache/arrow-go/v18/arrow"

type recordSink struct{ recs []arrow.RecordBatch }

func (s *recordSink) Write(rec arrow.RecordBatch) error {
	rec.Retain()
	s.recs = append(s.recs, rec)
	return nil
}

func (s *recordSink) release() {
	for _, r := range s.recs {
		r.Release()
	}
}
