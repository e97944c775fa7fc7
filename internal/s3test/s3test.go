// Package s3test runs a real S3-compatible server for tests: SeaweedFS
// (`weed server -s3`, Apache-2.0), started by the tests themselves on free
// loopback ports with a temporary data directory, and stopped after them.
//
// The binary is WEED_BIN, else .cache/seaweedfs/bin/weed in the repository
// (built once by `bash scripts/seaweedfs.sh`, which `make test` runs). When
// it is missing the tests that need it fail with a message saying how to
// get it under CI=true, and are skipped with that message elsewhere.
package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials and bucket of every test server.
const (
	AccessKey = "arrowquant-test"
	SecretKey = "arrowquant-test-secret-key"
	Bucket    = "arrowquant-test"
	Region    = "us-east-1"
)

// Server is one running SeaweedFS: a `weed server` process (master,
// volume server and filer) and an S3 gateway (`weed s3`) in front of it;
// more gateways on the same data can be added with NewGateway.
type Server struct {
	*Gateway // the default gateway (Endpoint, Client, Env, Stop, Restart)
	cluster  *proc
	filer    string // host:port.grpcport
	bin, dir string
	ports    []int
}

// Gateway is one S3 gateway process. Stopping it makes S3 unreachable at
// its Endpoint while the data stays (the filer, volume and master go on).
type Gateway struct {
	Endpoint string // http://127.0.0.1:PORT
	p        *proc
}

// proc is a SeaweedFS process that can be stopped and started again with
// the same arguments.
type proc struct {
	bin, dir string
	args     []string
	logPath  string
	ready    func(context.Context) error
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
}

// Binary finds the weed binary, or says how to get it.
func Binary() (string, error) {
	if p := os.Getenv("WEED_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("WEED_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".cache", "seaweedfs", "bin", "weed")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("the SeaweedFS server binary is missing (%s): build it once with `bash scripts/seaweedfs.sh` (`make test` does), or set WEED_BIN", p)
	}
	return p, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

// need fails (CI) or skips the test when the binary is missing.
func need(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("S3 tests need SeaweedFS: %v", err)
		}
		t.Skipf("S3 tests need SeaweedFS: %v", err)
	}
	return bin
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
)

// Shared is one server for the whole test binary (stopped by Main). Tests
// keep apart with Prefix.
func Shared(t testing.TB) *Server {
	t.Helper()
	bin := need(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = start(bin)
	}
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// Main runs the tests and then stops the shared server: call it from
// TestMain as os.Exit(s3test.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	if shared != nil {
		shared.Close()
	}
	sharedMu.Unlock()
	return code
}

// Start starts a server of the caller's own, outside tests (benchmarks);
// Close stops it.
func Start() (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	return start(bin)
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

var prefixSeq struct {
	sync.Mutex
	n int
}

// Prefix is a key prefix of the test's own in the bucket.
func Prefix(t testing.TB) string {
	prefixSeq.Lock()
	prefixSeq.n++
	n := prefixSeq.n
	prefixSeq.Unlock()
	name := unsafeChars.ReplaceAllString(t.Name(), "-")
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	return fmt.Sprintf("t/%s-%d-%d", strings.Trim(name, "-"), time.Now().UnixNano()%1e6, n)
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		if p := l.Addr().(*net.TCPAddr).Port; p < 50000 { // weed derives some ports by +10000
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func start(bin string) (*Server, error) {
	dir, err := os.MkdirTemp("", "arrowquant-seaweedfs-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(6)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, ports: ports, filer: fmt.Sprintf("127.0.0.1:%d.%d", ports[4], ports[5])}
	cfg := fmt.Sprintf(`{"identities":[{"name":"arrowquant","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`, AccessKey, SecretKey)
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), []byte(cfg), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := ports
	// Everything on 127.0.0.1 with explicit ports (no default that could
	// collide with another test binary's server), no telemetry, small volumes.
	s.cluster = &proc{bin: bin, dir: dir, logPath: filepath.Join(dir, "server.log"), args: []string{"server",
		"-dir=" + filepath.Join(dir, "data"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port=" + strconv.Itoa(p[0]), "-master.port.grpc=" + strconv.Itoa(p[1]),
		"-volume.port=" + strconv.Itoa(p[2]), "-volume.port.grpc=" + strconv.Itoa(p[3]),
		"-filer.port=" + strconv.Itoa(p[4]), "-filer.port.grpc=" + strconv.Itoa(p[5]),
		"-filer", "-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-master.telemetry=false", "-master.volumeSizeLimitMB=256", "-volume.max=0",
	}}
	if err := s.cluster.start(); err != nil {
		s.Close()
		return nil, err
	}
	// The cluster is ready when its first gateway serves writes (the filer
	// joins the master about 10 s after a fresh start).
	if s.Gateway, err = s.newGateway(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

var gatewaySeq struct {
	sync.Mutex
	n int
}

// newGateway starts an S3 gateway on the server's filer and waits until
// it serves writes.
func (s *Server) newGateway() (*Gateway, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	gatewaySeq.Lock()
	gatewaySeq.n++
	n := gatewaySeq.n
	gatewaySeq.Unlock()
	g := &Gateway{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", ports[0])}
	g.p = &proc{bin: s.bin, dir: s.dir, logPath: filepath.Join(s.dir, fmt.Sprintf("s3-%d.log", n)), args: []string{"s3",
		"-filer=" + s.filer, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-port=" + strconv.Itoa(ports[0]), "-port.grpc=" + strconv.Itoa(ports[1]), "-port.iceberg=0", "-port.lance=0", "-autoCreateBucket=false",
		"-config=" + filepath.Join(s.dir, "s3.json"), "-localSocket=" + filepath.Join(s.dir, fmt.Sprintf("s3-%d.sock", n)),
	}, ready: g.waitReady}
	if err := g.p.start(); err != nil {
		g.p.stop(syscall.SIGKILL)
		return nil, err
	}
	return g, nil
}

// NewGateway starts one more S3 gateway on the server's data for this test
// (stopped when the test ends): a test may stop and restart it without
// disturbing others.
func (s *Server) NewGateway(t testing.TB) *Gateway {
	t.Helper()
	g, err := s.newGateway()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.p.stop(syscall.SIGKILL) })
	return g
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return errors.New("s3test: already running")
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("s3test: start %s: %w", p.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	if p.ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-exited:
			stop()
		case <-ctx.Done():
		}
	}()
	if err := p.ready(ctx); err != nil {
		select {
		case <-exited:
			err = fmt.Errorf("the process exited (%w)", err)
		default:
		}
		p.stopLocked(syscall.SIGKILL)
		return fmt.Errorf("s3test: SeaweedFS (weed %s) did not become ready: %w\n%s", p.args[0], err, tail(p.logPath))
	}
	return nil
}

func (p *proc) stop(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked(sig)
}

func (p *proc) stopLocked(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

// Client is an S3 client for the gateway with the test credentials.
func (g *Gateway) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(g.Endpoint), Region: Region, UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           1,
		HTTPClient:                 &http.Client{Timeout: 10 * time.Second},
	})
}

func (g *Gateway) waitReady(ctx context.Context) error {
	c := g.Client()
	var last error
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
		_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(Bucket)})
		if err != nil && !strings.Contains(err.Error(), "BucketAlreadyOwnedByYou") && !strings.Contains(err.Error(), "BucketAlreadyExists") {
			last = err
			continue
		}
		_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(Bucket), Key: aws.String("ready"), Body: bytes.NewReader([]byte("ok"))})
		if err != nil {
			last = err
			continue
		}
		return nil
	}
}

// ListKeys lists every key under prefix in the test bucket.
func (g *Gateway) ListKeys(prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(g.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}

// Stop kills the gateway (SIGKILL: as abrupt as a crash or a network
// partition): S3 at Endpoint is unreachable until Restart.
func (g *Gateway) Stop() { g.p.stop(syscall.SIGKILL) }

// Restart starts the gateway again on the same port and waits until it
// serves writes.
func (g *Gateway) Restart() error { return g.p.start() }

// Env is the AWS environment for a process using this gateway.
func (g *Gateway) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + AccessKey, "AWS_SECRET_ACCESS_KEY=" + SecretKey, "AWS_REGION=" + Region, "AWS_ENDPOINT_URL=" + g.Endpoint}
}

// CPUTime is the CPU time (user + system) SeaweedFS's processes (the
// cluster and the default gateway) have used so far, from /proc (Linux;
// 0 elsewhere): benchmarks report what the S3 server costs.
func (s *Server) CPUTime() time.Duration {
	var total time.Duration
	for _, p := range []*proc{s.cluster, s.Gateway.p} {
		p.mu.Lock()
		if p.cmd != nil {
			total += procCPU(p.cmd.Process.Pid)
		}
		p.mu.Unlock()
	}
	return total
}

// procCPU reads utime + stime of pid from /proc/PID/stat (clock ticks of
// 10 ms on Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: fields count after ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// Close kills every process (the data is thrown away: no need for a clean
// shutdown, which takes SeaweedFS seconds) and removes the data.
func (s *Server) Close() {
	if s.Gateway != nil {
		s.Gateway.Stop()
	}
	if s.cluster != nil {
		s.cluster.stop(syscall.SIGKILL)
	}
	os.RemoveAll(s.dir)
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
