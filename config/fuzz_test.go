package config

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzVectors returns the YAML documents and environment values of the
// shared test vectors (testdata/vectors.json).
func fuzzVectors(f *testing.F) (yamls []string, env [][2]string) {
	data, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		f.Fatal(err)
	}
	var vs []struct {
		YAML *string           `json:"yaml"`
		Env  map[string]string `json:"env"`
	}
	if err := json.Unmarshal(data, &vs); err != nil {
		f.Fatal(err)
	}
	for _, v := range vs {
		if v.YAML != nil {
			yamls = append(yamls, *v.YAML)
		}
		for k, val := range v.Env {
			env = append(env, [2]string{k, val})
		}
	}
	return yamls, env
}

// checkAccepted asserts that an accepted configuration is valid and holds
// every setting the source gave (the base profile's presets under them).
func checkAccepted(t *testing.T, c DiffusionQuantConfig, settings patch) {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatalf("accepted an invalid configuration %+v: %v", c, err)
	}
	for _, s := range settings {
		if s.f.key == profileKey {
			continue // re-bases; DeploymentProfile is checked by Validate
		}
		if got := s.f.get(&c); got != s.v {
			t.Fatalf("%s = %v after resolving, the source said %v", s.f.key, got, s.v)
		}
	}
}

// FuzzParseYAML parses arbitrary configuration files and resolves what
// parses: never a panic; a rejection has a kind (config.Kind) and names
// the file; an accepted configuration passes Validate and holds the
// file's values.
func FuzzParseYAML(f *testing.F) {
	yamls, _ := fuzzVectors(f)
	for _, y := range yamls {
		f.Add([]byte(y))
	}
	example, err := os.ReadFile(filepath.Join("..", "config.example.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{
		"", "~", "# only a comment\n", "---\nbit_width: 4\n---\nbit_width: 8\n", "[1, 2]\n", "bit_width: [2]\n",
		"a: &x 4\nbit_width: *x\n", "base: &b {bit_width: 2}\n<<: *b\n", "bit_width: !!str 4\n", "bit_width: 0x8\n",
		"bit_width: 99999999999999999999999\n", "min_accuracy: .nan\n", "min_accuracy: 1e309\n", "modality: ~\n",
		"modality: \"IMAGE \"\n", "fail_fast: yes\nenable_streaming: \"no\"\n", "deployment_profile: edge\nbit_width: 8\n",
		"bit_width: 4\nbit_width: 4\n", "? [a]\n: 1\n", "bit_width: &a *a\n", "\t bit_width: 4\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const source = "fuzz/config.yaml"
		doc, err := parseYAML(data, source)
		if err != nil {
			if Kind(err) == "" || !strings.HasPrefix(err.Error(), source+": ") {
				t.Fatalf("rejection without a kind or the file's name (kind %q): %v", Kind(err), err)
			}
			return
		}
		c, err := resolve(doc, Options{})
		if err != nil {
			if Kind(err) == "" {
				t.Fatalf("resolve refused without a kind: %v", err)
			}
			return
		}
		checkAccepted(t, c, doc.settings)
		if doc.hasProfile && c.DeploymentProfile != doc.profile {
			t.Fatalf("deployment_profile %q, the file said %q", c.DeploymentProfile, doc.profile)
		}
	})
}

// FuzzEnvValue resolves a configuration from one ARROW_QUANT_* variable
// (chosen by index among EnvVars) with an arbitrary value: never a panic;
// a rejection has a kind and, for a malformed value, names the variable;
// an accepted configuration passes Validate and holds the value.
func FuzzEnvValue(f *testing.F) {
	vars := EnvVars()
	index := map[string]uint8{}
	for i, v := range vars {
		index[v] = uint8(i)
	}
	_, env := fuzzVectors(f)
	for _, kv := range env {
		if i, ok := index[kv[0]]; ok {
			f.Add(i, kv[1])
		}
	}
	for i := range vars {
		for _, v := range []string{"", " ", "4", "-1", "1e3", "0x10", "NaN", "Inf", "9223372036854775808", "yes", "TRUE", "Edge ", "null", "auto", "\x00", "٣"} {
			f.Add(uint8(i), v)
		}
	}
	f.Fuzz(func(t *testing.T, i uint8, value string) {
		name := vars[int(i)%len(vars)]
		c, err := Resolve(Options{Lookup: func(k string) (string, bool) {
			if k == name {
				return value, true
			}
			return "", false
		}})
		if err != nil {
			kind := Kind(err)
			if kind == "" || (kind == KindEnvError && !strings.Contains(err.Error(), name+"=")) {
				t.Fatalf("%s=%q: rejection without a kind or the variable's name (kind %q): %v", name, value, kind, err)
			}
			return
		}
		var settings patch
		if strings.TrimSpace(value) != "" {
			s, err := parseSetting(envKey(name), value, "")
			if err != nil {
				t.Fatalf("%s=%q accepted by Resolve, refused by Set: %v", name, value, err)
			}
			settings = patch{s}
			if s.f.key == profileKey && c.DeploymentProfile != s.v {
				t.Fatalf("%s=%q: deployment_profile %q", name, value, c.DeploymentProfile)
			}
		}
		checkAccepted(t, c, settings)
	})
}

// envKey is the configuration key of an environment variable.
func envKey(env string) string {
	for _, f := range fields {
		if f.env == env {
			return f.key
		}
	}
	return ""
}

// TestMain bounds the minimization of each new fuzz input to 3 s (Go's
// default is 60 s) unless -test.fuzzminimizetime is given: with the
// default, minimizing took 28 of the first 30 s of a run.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		flag.Set("test.fuzzminimizetime", "3s")
	}
	os.Exit(m.Run())
}
