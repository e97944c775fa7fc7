package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// export: a target-gguf artifact exports with --exact; a default one is
// refused by --exact (exit 2, nothing written) and exports re-encoded
// without it; bad flags, inputs and outputs exit 2.
func TestExportGGUF(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "q")
	stdout, err, code := cli(t, map[string]string{"ARROW_QUANT_TARGET": "gguf"}, "quantize", "--model", tinyDir, "--output", q, "--json")
	if code != 0 {
		t.Fatalf("quantize: exit %d: %v", code, err)
	}
	if r := readResult(t, stdout); r.Target != "gguf" || r.Config.Target != "gguf" {
		t.Fatalf("result target %q / %q", r.Target, r.Config.Target)
	}
	out := filepath.Join(dir, "m.gguf")
	stdout, err, code = cli(t, nil, "export", "--input", q, "--format", "gguf", "--output", out, "--exact", "--json")
	if code != 0 {
		t.Fatalf("export --exact: exit %d: %v", code, err)
	}
	var rep struct {
		Exact     int `json:"exact_tensors"`
		Reencoded int `json:"reencoded_tensors"`
		Tensors   []struct {
			Type string `json:"gguf_type"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.Reencoded != 0 || rep.Exact != len(rep.Tensors) || rep.Exact == 0 {
		t.Fatalf("report %v: %+v", err, rep)
	}
	if _, err := os.Stat(out + ".report.json"); err != nil {
		t.Fatal(err)
	}
	// The summary names the counts.
	stdout, _, code = cli(t, nil, "export", "--input", filepath.Join(q, "model.arrow"), "--output", out, "--overwrite")
	if code != 0 || !strings.Contains(stdout, "bit-exact, 0 re-encoded") {
		t.Fatalf("summary (exit %d): %s", code, stdout)
	}

	t.Setenv("ARROW_QUANT_TARGET", "") // empty: unset
	plain := filepath.Join(dir, "plain")
	if _, err, code := cli(t, nil, "quantize", "--model", tinyDir, "--output", plain, "--profile", "edge", "--json"); code != 0 {
		t.Fatalf("quantize: %v", err)
	}
	refused := filepath.Join(dir, "refused.gguf")
	_, err, code = cli(t, nil, "export", "--input", plain, "--output", refused, "--exact")
	if code != 2 || err == nil || !strings.Contains(err.Error(), "re-encoded") || !strings.Contains(err.Error(), ".weight") {
		t.Fatalf("--exact on an INT2 g256 artifact: exit %d: %v", code, err)
	}
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Fatal("--exact refusal wrote the output")
	}
	if _, err, code := cli(t, nil, "export", "--input", plain, "--output", refused); code != 0 {
		t.Fatalf("export without --exact: %v", err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"export", "--output", out}, "needs --model"},
		{[]string{"export", "--input", q, "--output", out, "--format", "onnx"}, "only export format"},
		{[]string{"export", "--input", q, "--output", out}, "exists"},
		{[]string{"export", "--input", q, "--output", filepath.Join(dir, "nope", "m.gguf")}, "output directory"},
		{[]string{"export", "--input", tinyDir, "--output", filepath.Join(dir, "x.gguf")}, "model.arrow"},
		{[]string{"quantize", "--model", tinyDir, "--output", filepath.Join(dir, "q2"), "--target", "gguf", "--method", "dq"}, "target gguf"},
		{[]string{"quantize", "--model", tinyDir, "--output", filepath.Join(dir, "q3"), "--target", "onnx"}, "InvalidTarget"},
	} {
		_, err, code := cli(t, nil, c.args...)
		if code != 2 || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: exit %d, %v (want exit 2 with %q)", c.args, code, err, c.want)
		}
	}
}
