// Command s3server runs the SeaweedFS of the tests (internal/s3test: `weed
// server` on 127.0.0.1 with an S3 gateway, the test bucket and
// credentials) for benchmark scripts: it prints the AWS environment to use
// it, one VAR=value per line, then "READY", and stops SeaweedFS and removes
// its data when its standard input closes or on SIGINT/SIGTERM.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/arrowquant/arrowquant/internal/s3test"
)

func main() {
	srv, err := s3test.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3server:", err)
		os.Exit(1)
	}
	defer srv.Close()
	for _, kv := range srv.Env() {
		fmt.Println(kv)
	}
	fmt.Println("AQ_S3_BUCKET=" + s3test.Bucket)
	fmt.Println("READY")
	done := make(chan struct{}, 2)
	go func() { io.Copy(io.Discard, os.Stdin); done <- struct{}{} }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; done <- struct{}{} }()
	<-done
}
