package s3bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/arrowquant/arrowquant/internal/s3test"
)

// BenchmarkRawGet: what the S3 server itself delivers on this machine, one
// GET of a 36 MB object or the same in parallel 8 MiB ranges.
func BenchmarkRawGet(b *testing.B) {
	srv := s3test.Shared(b)
	c := srv.Client()
	key := s3test.Prefix(b) + "/obj"
	const size = 36 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(s3test.Bucket), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 4, 36} {
		b.Run(fmt.Sprintf("sequential-ranges-%d", n), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				chunk := int64(size / n)
				for i := range n {
					out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s3test.Bucket), Key: aws.String(key),
						Range: aws.String(fmt.Sprintf("bytes=%d-%d", int64(i)*chunk, int64(i+1)*chunk-1))})
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, out.Body)
					out.Body.Close()
				}
			}
		})
	}
	for _, par := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("ranges-%d", par), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				var wg sync.WaitGroup
				chunk := int64(size / par)
				for i := range par {
					wg.Add(1)
					go func() {
						defer wg.Done()
						out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s3test.Bucket), Key: aws.String(key),
							Range: aws.String(fmt.Sprintf("bytes=%d-%d", int64(i)*chunk, int64(i+1)*chunk-1))})
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, out.Body)
						out.Body.Close()
					}()
				}
				wg.Wait()
			}
		})
	}
}
