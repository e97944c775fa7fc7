package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"maps"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/arrowquant/arrowquant/artifact"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/flightsrv"
	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/modelio"
	"github.com/arrowquant/arrowquant/quant"
)

// cli runs the command in-process and returns stdout, the error and the exit code.
func cli(t *testing.T, env map[string]string, args ...string) (string, error, int) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err, exitCode(err)
}

var tinyDir string

func TestMain(m *testing.M) {
	if os.Getenv("ARROWQUANT_CLI_CHILD") != "" { // re-exec'd child: run the CLI for real
		os.Args = append([]string{"arrowquant"}, strings.Fields(os.Getenv("ARROWQUANT_CLI_CHILD"))...)
		main()
		return
	}
	dir, err := os.MkdirTemp("", "aq-cli-")
	if err != nil {
		panic(err)
	}
	tinyDir = filepath.Join(dir, "tiny")
	if err := modelio.Generate(context.Background(), modelio.GenOptions{Preset: "tiny", Out: tinyDir, Seed: 7}); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func readResult(t *testing.T, s string) quant.Result {
	t.Helper()
	var r quant.Result
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, s)
	}
	return r
}

func TestQuantizeJSONAndOutputLayout(t *testing.T) {
	out := filepath.Join(t.TempDir(), "q")
	stdout, err, code := cli(t, nil, "quantize", "--model", tinyDir, "--output", out, "--profile", "local", "--json")
	if err != nil || code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	r := readResult(t, stdout)
	var raw map[string]any
	json.Unmarshal([]byte(stdout), &raw)
	for _, k := range []string{"model_size_mb", "cosine_similarity", "min_cosine_similarity", "compression_ratio", "fallback_occurred",
		"actual_bit_width", "fallback_reason", "quantized_path", "modality", "bit_width", "quantization_time_s", "layers"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("result lacks %q", k)
		}
	}
	st, err := os.Stat(filepath.Join(out, artifact.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.ModelSizeMB-float64(st.Size())/(1<<20)) > 1e-9 || r.QuantizedPath != filepath.Join(out, artifact.FileName) {
		t.Errorf("size %v MB path %s vs file %d bytes", r.ModelSizeMB, r.QuantizedPath, st.Size())
	}
	if r.Modality != "text" || r.BitWidth != 4 || r.NumTensors != 27 || len(r.Layers) != 27 {
		t.Errorf("modality %s bits %d tensors %d", r.Modality, r.BitWidth, r.NumTensors)
	}
	if r.CompressionRatio < 3 || r.CompressionRatio > 4 { // BF16 -> ~4.25 bits/weight
		t.Errorf("compression ratio %v outside [3,4] for INT4 g128 from BF16", r.CompressionRatio)
	}
	for _, f := range []string{"config.json", "tokenizer_config.json", "generation_config.json", artifact.ReportName} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output lacks %s", f)
		}
	}
	rep, _ := os.ReadFile(filepath.Join(out, artifact.ReportName))
	if readResult(t, string(rep)).CosineSimilarity != r.CosineSimilarity {
		t.Error("report.json differs from --json output")
	}
	// Refused without --overwrite (exit 2), replaced with it.
	if _, err, code := cli(t, nil, "quantize", "--model", tinyDir, "--output", out); code != 2 || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("non-empty output: exit %d, %v", code, err)
	}
	if _, err, code := cli(t, nil, "quantize", "--model", tinyDir, "--output", out, "--overwrite", "--bit-width", "8"); code != 0 {
		t.Fatalf("overwrite: %v", err)
	}
	rep, _ = os.ReadFile(filepath.Join(out, artifact.ReportName))
	if readResult(t, string(rep)).BitWidth != 8 {
		t.Error("--overwrite did not replace the output")
	}
}

// Dequantized values reproduce the report's per-tensor cosine.
func TestDequantizeRoundTrip(t *testing.T) {
	dir := t.TempDir()
	q, d := filepath.Join(dir, "q"), filepath.Join(dir, "d")
	stdout, err, _ := cli(t, nil, "quantize", "--model", tinyDir, "--output", q, "--bit-width", "4", "--json")
	if err != nil {
		t.Fatal(err)
	}
	res := readResult(t, stdout)
	if _, err, code := cli(t, nil, "dequantize", "--input", q, "--output", d); code != 0 {
		t.Fatal(err)
	}
	src, err := modelio.Open(tinyDir, modelio.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out, err := modelio.Open(d, modelio.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if len(out.Tensors) != len(src.Tensors) {
		t.Fatalf("%d tensors, want %d", len(out.Tensors), len(src.Tensors))
	}
	for i, l := range res.Layers {
		ti, ok := out.Lookup(l.Name)
		si := src.Tensors[i]
		if !ok || ti.DType != modelio.F32 || !slices.Equal(ti.Shape, si.Shape) {
			t.Fatalf("%s: missing or wrong shape/dtype in dequantized model", l.Name)
		}
		n := si.NumElements()
		a, b := make([]float32, n), make([]float32, n)
		if err := src.ReadFloat32(si, 0, n, a, nil); err != nil {
			t.Fatal(err)
		}
		if err := out.ReadFloat32(ti, 0, n, b, nil); err != nil {
			t.Fatal(err)
		}
		var dot, aa, bb float64
		for j := range a {
			dot += float64(a[j]) * float64(b[j])
			aa += float64(a[j]) * float64(a[j])
			bb += float64(b[j]) * float64(b[j])
		}
		if cos := dot / math.Sqrt(aa*bb); math.Abs(cos-l.CosineSimilarity) > 1e-6 {
			t.Errorf("%s: dequantized cosine %v, report says %v", l.Name, cos, l.CosineSimilarity)
		}
	}
}

func TestConfigErrorsExitTwo(t *testing.T) {
	out := filepath.Join(t.TempDir(), "q")
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bit width", nil, []string{"--bit-width", "3"}, "InvalidBitWidth(3)"},
		{"group size", nil, []string{"--group-size", "100"}, "InvalidGroupSize(100)"},
		{"time groups", nil, []string{"--num-time-groups", "150"}, "InvalidTimeGroups(150)"},
		{"accuracy", nil, []string{"--min-accuracy", "1.5"}, "InvalidAccuracy(1.5)"},
		{"profile", nil, []string{"--profile", "mobile"}, "InvalidProfile"},
		{"modality", nil, []string{"--modality", "video"}, "InvalidModality"},
		{"env", map[string]string{"ARROW_QUANT_BIT_WIDTH": "abc"}, nil, "ARROW_QUANT_BIT_WIDTH"},
		{"unknown flag", nil, []string{"--bits", "4"}, "unknown flag"},
		{"method", nil, []string{"--method", "nope"}, `--method: unknown quantization method "nope" (known: clip, dq, lsq, minmax, q8_0)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"quantize", "--model", tinyDir, "--output", out}, c.args...)
			_, err, code := cli(t, c.env, args...)
			if code != 2 || err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("exit %d, %v; want exit 2 naming %s", code, err, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatal("a failed run created the output directory")
			}
		})
	}
}

func TestPrecedenceFlagsOverEnvOverYAML(t *testing.T) {
	dir := t.TempDir()
	yml := filepath.Join(dir, "c.yaml")
	os.WriteFile(yml, []byte("deployment_profile: edge\nbit_width: 8\nmin_accuracy: 0.5\n"), 0o644)
	stdout, err, _ := cli(t, map[string]string{"ARROW_QUANT_BIT_WIDTH": "4"}, "quantize", "--model", tinyDir,
		"--output", filepath.Join(dir, "q"), "--config", yml, "--group-size", "64", "--json")
	if err != nil {
		t.Fatal(err)
	}
	c := readResult(t, stdout).Config
	if c.BitWidth != 4 || c.GroupSize != 64 || c.MinAccuracy != 0.5 || !c.EnableStreaming || c.NumTimeGroups != 5 {
		t.Fatalf("effective config %+v", c)
	}
}

// writeST writes a one-tensor safetensors file with a raw header.
func writeST(t *testing.T, dir, header string, data []byte) string {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	p := filepath.Join(dir, "model.safetensors")
	os.WriteFile(p, b.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type":"llama"}`), 0o644)
	return p
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	fp.EncodeF32(b, v)
	return b
}

func TestBadInputsFailCleanly(t *testing.T) {
	good := f32bytes(make([]float32, 64)...)
	nan := f32bytes(make([]float32, 64)...)
	copy(nan[4*37:], f32bytes(float32(math.NaN())))
	cases := []struct {
		name  string
		setup func(dir string) string // returns the model dir
		want  []string
	}{
		{"missing dir", func(dir string) string { return filepath.Join(dir, "nope") }, []string{"nope"}},
		{"no safetensors", func(dir string) string {
			m := filepath.Join(dir, "m")
			os.MkdirAll(m, 0o755)
			os.WriteFile(filepath.Join(m, "config.json"), []byte("{}"), 0o644)
			return m
		}, []string{"safetensors"}},
		{"truncated", func(dir string) string {
			p := writeST(t, filepath.Join(dir, "m"), `{"w":{"dtype":"F32","shape":[8,8],"data_offsets":[0,256]}}`, good)
			os.Truncate(p, 100)
			return filepath.Dir(p)
		}, []string{"model.safetensors"}},
		{"header beyond file", func(dir string) string {
			m := filepath.Join(dir, "m")
			os.MkdirAll(m, 0o755)
			var b bytes.Buffer
			binary.Write(&b, binary.LittleEndian, uint64(1<<20))
			b.WriteString(`{"w":`)
			os.WriteFile(filepath.Join(m, "model.safetensors"), b.Bytes(), 0o644)
			return m
		}, []string{"model.safetensors", "header"}},
		{"offsets out of range", func(dir string) string {
			return filepath.Dir(writeST(t, filepath.Join(dir, "m"), `{"w":{"dtype":"F32","shape":[8,8],"data_offsets":[0,512]}}`, good))
		}, []string{"model.safetensors", `"w"`}},
		{"overlapping offsets", func(dir string) string {
			return filepath.Dir(writeST(t, filepath.Join(dir, "m"), `{"a":{"dtype":"F32","shape":[8,4],"data_offsets":[0,128]},"b":{"dtype":"F32","shape":[8,4],"data_offsets":[64,192]}}`, good))
		}, []string{"model.safetensors", "overlap"}},
		{"unsupported dtype", func(dir string) string {
			return filepath.Dir(writeST(t, filepath.Join(dir, "m"), `{"w":{"dtype":"I64","shape":[8,4],"data_offsets":[0,256]}}`, good))
		}, []string{"model.safetensors", `"w"`, "I64"}},
		{"shape mismatch", func(dir string) string {
			return filepath.Dir(writeST(t, filepath.Join(dir, "m"), `{"w":{"dtype":"F32","shape":[8,9],"data_offsets":[0,256]}}`, good))
		}, []string{"model.safetensors", `"w"`}},
		{"header not UTF-8", func(dir string) string {
			return filepath.Dir(writeST(t, filepath.Join(dir, "m"), "{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[8,8],\"data_offsets\":[0,256]}}", good))
		}, []string{"model.safetensors", "UTF-8"}},
		{"only metadata", func(dir string) string {
			return filepath.Dir(writeST(t, filepath.Join(dir, "m"), `{"__metadata__":{"format":"pt"}}`, nil))
		}, []string{"model.safetensors", "no tensors"}},
		{"shape product wraps", func(dir string) string {
			return filepath.Dir(writeST(t, filepath.Join(dir, "m"), `{"w":{"dtype":"F32","shape":[2305843009213693953,8],"data_offsets":[0,256]}}`, good))
		}, []string{"model.safetensors", `"w"`, "overflow"}},
		{"fifo", func(dir string) string {
			m := filepath.Join(dir, "m")
			os.MkdirAll(m, 0o755)
			if err := syscall.Mkfifo(filepath.Join(m, "model.safetensors"), 0o644); err != nil {
				t.Skip("mkfifo:", err)
			}
			return m
		}, []string{"model.safetensors", "FIFO"}},
		{"nan", func(dir string) string {
			return filepath.Dir(writeST(t, filepath.Join(dir, "m"), `{"w":{"dtype":"F32","shape":[8,8],"data_offsets":[0,256]}}`, nan))
		}, []string{`"w"`, "NaN", "element 37", "[4 5]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			model := c.setup(dir)
			out := filepath.Join(dir, "out")
			_, err, code := cli(t, nil, "quantize", "--model", model, "--output", out)
			wantCode := 1 // a bad model file
			if c.name == "missing dir" {
				wantCode = 2 // a usage error
			}
			if err == nil || code != wantCode {
				t.Fatalf("exit %d, err %v; want exit %d", code, err, wantCode)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.Name() == "out" || strings.HasPrefix(e.Name(), ".out") {
					t.Errorf("failed run left %s behind", e.Name())
				}
			}
		})
	}
}

// A write error mid-way (file size limit standing in for a full disk)
// leaves no output directory and no temporary files.
func TestWriteErrorLeavesNoArtifact(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not available")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cmd := exec.Command("bash", "-c", "ulimit -f 300; exec \"$0\"", os.Args[0])
	cmd.Env = append(os.Environ(), "ARROWQUANT_CLI_CHILD=quantize --model "+tinyDir+" --output "+out+" --bit-width 8")
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v: %s", err, b)
	}
	if !strings.Contains(string(b), "file too large") {
		t.Errorf("error does not report the write failure: %s", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("failed write left %v behind", ents)
	}
}

func TestValidateConfigAndProfiles(t *testing.T) {
	dir := t.TempDir()
	good, bad, unknown := filepath.Join(dir, "g.yaml"), filepath.Join(dir, "b.yaml"), filepath.Join(dir, "u.yaml")
	os.WriteFile(good, []byte("deployment_profile: cloud\nmin_accuracy: 0.9\n"), 0o644)
	os.WriteFile(bad, []byte("bit_width: 3\n"), 0o644)
	os.WriteFile(unknown, []byte("bitwidth: 4\n"), 0o644)
	stdout, err, code := cli(t, nil, "validate-config", good)
	if code != 0 || !strings.Contains(stdout, `"bit_width": 8`) || !strings.Contains(stdout, `"min_accuracy": 0.9`) {
		t.Fatalf("exit %d %v: %s", code, err, stdout)
	}
	if _, err, code := cli(t, nil, "validate-config", bad); code != 2 || !strings.Contains(err.Error(), "InvalidBitWidth(3)") {
		t.Errorf("bad: exit %d %v", code, err)
	}
	if _, err, code := cli(t, nil, "validate-config", unknown); code != 2 || !strings.Contains(err.Error(), `"bitwidth"`) {
		t.Errorf("unknown key: exit %d %v", code, err)
	}
	stdout, _, _ = cli(t, nil, "profiles")
	for _, w := range []string{"edge", "local", "cloud", "bit_width", "enable_streaming"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("profiles output lacks %s", w)
		}
	}
}

// serve, push, ls, info and pull through the CLI against a real server.
func TestFlightCommands(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- flightsrv.Serve(ctx, flightsrv.ServerConfig{
			Addr: "127.0.0.1:0", DataDir: t.TempDir(), Defaults: config.Default(), Logger: zerolog.Nop(),
			Ready: func(a net.Addr) { addrCh <- a.String() },
		})
	}()
	var server string
	select {
	case a := <-addrCh:
		server = "grpc://" + a
	case err := <-done:
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	stdout, err, code := cli(t, nil, "push", "--server", server, "--model", tinyDir, "--name", "tiny", "--profile", "edge", "--json")
	if code != 0 {
		t.Fatalf("push: exit %d %v", code, err)
	}
	if r := readResult(t, stdout); r.BitWidth != 2 || r.NumTensors != 27 || r.Config.DeploymentProfile != config.Edge {
		t.Fatalf("push result: bits %d tensors %d profile %s", r.BitWidth, r.NumTensors, r.Config.DeploymentProfile)
	}
	if _, err, code := cli(t, nil, "push", "--server", server, "--model", tinyDir, "--name", "tiny"); code != 1 || !strings.Contains(err.Error(), "AlreadyExists") {
		t.Errorf("second push: exit %d %v", code, err)
	}
	stdout, err, code = cli(t, nil, "push", "--server", server, "--model", tinyDir, "--name", "tiny-dq", "--method", "dq", "--json")
	if r := readResult(t, stdout); code != 0 || r.Method != "dq" || r.Layers[0].GroupSize != 32 {
		t.Fatalf("push --method dq: exit %d %v: method %q", code, err, r.Method)
	}
	if _, err, code := cli(t, nil, "push", "--server", server, "--model", tinyDir, "--name", "x", "--method", "nope"); code != 2 || !strings.Contains(err.Error(), `unknown quantization method "nope"`) {
		t.Errorf("push --method nope: exit %d %v", code, err)
	}
	stdout, err, _ = cli(t, nil, "ls", "--server", server, "--json")
	if err != nil || !strings.Contains(stdout, `"name": "tiny"`) {
		t.Errorf("ls: %v %s", err, stdout)
	}
	stdout, err, _ = cli(t, nil, "info", "--server", server, "--name", "tiny", "--json")
	if err != nil || !strings.Contains(stdout, `"fallbacks"`) || !strings.Contains(stdout, `"total_records"`) {
		t.Errorf("info --json: %v %.200s", err, stdout)
	}
	stdout, err, _ = cli(t, nil, "info", "--server", server, "--name", "tiny")
	if err != nil || !strings.Contains(stdout, "model.layers.1.mlp.down_proj.weight") || !strings.Contains(stdout, "27 tensors") {
		t.Errorf("info table: %v %.300s", err, stdout)
	}
	out := filepath.Join(t.TempDir(), "pulled")
	if _, err, code := cli(t, nil, "pull", "--server", server, "--name", "tiny", "--output", out); code != 0 {
		t.Fatalf("pull: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, artifact.FileName)); err != nil {
		t.Error(err)
	}
	if _, err, code := cli(t, nil, "info", "--server", server, "--name", "nope"); code != 1 || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("unknown model: exit %d %v", code, err)
	}
}

// hashDir maps every file under dir to its contents' SHA-256.
func hashDir(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			out[rel] = sha256.Sum256(b)
		}
		return nil
	})
	return out
}

// No output option may write into, over or around its own input.
func TestSourcesAreNeverWritten(t *testing.T) {
	base := t.TempDir()
	m := filepath.Join(base, "parent", "m")
	if err := modelio.Generate(context.Background(), modelio.GenOptions{Preset: "tiny", Out: m, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	os.Symlink(m, filepath.Join(base, "mlink"))
	q := filepath.Join(base, "q")
	if _, err, code := cli(t, nil, "quantize", "--model", m, "--output", q); code != 0 {
		t.Fatalf("quantize: %v", err)
	}
	before, qBefore := hashDir(t, m), hashDir(t, q)
	cases := [][]string{
		{"quantize", "--model", m, "--output", m, "--overwrite"},
		{"quantize", "--model", m, "--output", m, "--overwrite", "--force"},
		{"quantize", "--model", m, "--output", filepath.Join(m, "out")},
		{"quantize", "--model", m, "--output", filepath.Join(base, "parent"), "--overwrite", "--force"},
		{"quantize", "--model", m, "--output", filepath.Join(base, "mlink"), "--overwrite", "--force"},
		{"quantize", "--model", filepath.Join(base, "mlink"), "--output", filepath.Join(m, "sub", "out")},
		{"dequantize", "--input", q, "--output", q, "--overwrite", "--force"},
		{"dequantize", "--input", filepath.Join(q, "model.arrow"), "--output", filepath.Join(q, "deq")},
		{"gen-model", "--out", filepath.Join(base, "parent"), "--overwrite"}, // not ours: needs --force
	}
	for _, args := range cases {
		_, err, code := cli(t, nil, args...)
		if code != 2 || err == nil {
			t.Errorf("%v: exit %d, %v; want exit 2", args, code, err)
			continue
		}
		if args[0] != "gen-model" && !strings.Contains(err.Error(), m) && !strings.Contains(err.Error(), q) {
			t.Errorf("%v: message %q does not name the input", args, err)
		}
	}
	if after := hashDir(t, m); !maps.Equal(before, after) {
		t.Errorf("the source model changed: %d files before, %d after", len(before), len(after))
	}
	if after := hashDir(t, q); !maps.Equal(qBefore, after) {
		t.Errorf("the quantized output changed: %d files before, %d after", len(qBefore), len(after))
	}
	// Our own output: --overwrite alone replaces it.
	if _, err, code := cli(t, nil, "quantize", "--model", m, "--output", q, "--overwrite", "--bit-width", "8"); code != 0 {
		t.Fatalf("overwrite of our own output: %v", err)
	}
}

func TestInspect(t *testing.T) {
	out := filepath.Join(t.TempDir(), "q")
	if _, err, code := cli(t, nil, "quantize", "--model", tinyDir, "--output", out, "--profile", "edge"); code != 0 {
		t.Fatal(err)
	}
	table, err, code := cli(t, nil, "inspect", out)
	if code != 0 {
		t.Fatal(err)
	}
	for _, want := range []string{"model.layers.0.mlp.down_proj.weight", "[256, 704]", "BF16 -> 2/clip g256", "27 tensors", "bits/weight", "cosine"} {
		if !strings.Contains(table, want) {
			t.Errorf("inspect table lacks %q:\n%s", want, table)
		}
	}
	js, err, code := cli(t, nil, "inspect", filepath.Join(out, "model.arrow"), "--json")
	if code != 0 {
		t.Fatal(err)
	}
	var v struct {
		Tensors []struct {
			Name        string
			Bits        int
			BytesBefore int64 `json:"bytes_before"`
			BytesAfter  int64 `json:"bytes_after"`
		}
		Totals struct {
			Tensors      int
			PayloadBytes int64 `json:"payload_bytes"`
			FileBytes    int64 `json:"file_bytes"`
		}
	}
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, js)
	}
	st, _ := os.Stat(filepath.Join(out, "model.arrow"))
	var payload int64
	for _, r := range v.Tensors {
		payload += r.BytesAfter
		if r.BytesBefore <= 0 || r.BytesAfter <= 0 || (r.Bits < 16 && r.BytesAfter >= r.BytesBefore) {
			t.Errorf("row %+v", r)
		}
	}
	if v.Totals.Tensors != 27 || v.Totals.PayloadBytes != payload || v.Totals.FileBytes != st.Size() || payload >= st.Size() {
		t.Errorf("totals %+v (payload sum %d, file %d)", v.Totals, payload, st.Size())
	}
	if _, _, code := cli(t, nil, "inspect", filepath.Join(t.TempDir(), "nope")); code != 2 {
		t.Errorf("inspect of nothing: exit %d", code)
	}
}

// slowModel writes a model that takes the edge profile (clip search) a
// second or so to quantize: long enough to interrupt.
func slowModel(t *testing.T) string {
	t.Helper()
	vals := make([]float32, 2048*2048)
	s := uint64(1)
	for i := range vals {
		s = s*6364136223846793005 + 1442695040888963407
		vals[i] = float32(int64(s>>40)-1<<23) / (1 << 23)
	}
	dir := filepath.Join(t.TempDir(), "slow")
	writeST(t, dir, `{"w":{"dtype":"F32","shape":[2048,2048],"data_offsets":[0,16777216]},"v":{"dtype":"F32","shape":[2048,2048],"data_offsets":[16777216,33554432]}}`,
		append(f32bytes(vals...), f32bytes(vals...)...))
	return dir
}

// startChildQuantize runs the CLI for real in a child process and waits
// until its temporary output exists.
func startChildQuantize(t *testing.T, model, out string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "ARROWQUANT_CLI_CHILD=quantize --model "+model+" --output "+out+" --profile edge --threads 1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")); len(m) > 0 {
			return cmd, m[0]
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Kill()
	t.Fatal("no temporary output appeared")
	return nil, ""
}

// A run ended by SIGHUP (terminal closed), SIGINT or SIGTERM removes its
// temporary output; one killed outright leaves it, and the next run to the
// same output sweeps it away.
func TestInterruptedRunsLeaveNothing(t *testing.T) {
	model := slowModel(t)
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM} {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		cmd, _ := startChildQuantize(t, model, out)
		time.Sleep(50 * time.Millisecond)
		cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: the run did not stop", sig)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%v left %v behind", sig, ents)
		}
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cmd, tmp := startChildQuantize(t, model, out)
	// Kill it once it holds its lock: a temporary killed before its lock
	// exists counts as just created and is left for a minute.
	lock := filepath.Join(tmp, ".arrowquant-building.lock")
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := os.Stat(lock); err == nil {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("a killed run's temporary is gone already (%v): the sweep is untested", err)
	}
	if _, err, code := cli(t, nil, "quantize", "--model", tinyDir, "--output", out); code != 0 {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("the next run did not sweep %s", tmp)
	}
}
