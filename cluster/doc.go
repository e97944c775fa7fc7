// Package cluster holds the end-to-end tests of several `arrowquant serve`
// processes sharing one S3 store (docs/STORE.md): push on one server and
// pull from another, concurrent clients on both, servers killed with
// SIGKILL in the middle of uploads, and the S3 server going away
// mid-upload. The S3 server is a real SeaweedFS started by the tests
// (internal/s3test); the servers are real: in-process flightsrv services,
// or the arrowquant binary (ARROW_QUANT_BIN, else built by the tests).
package cluster
