package config

// The shared test vectors: config/testdata/vectors.json is run here against the Go implementation and
// by python/tests/test_config_vectors.py against the Python one (arrow_quant_v2), so both accept the
// same inputs, produce the same configurations and fail with the same kinds and messages.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// vector is one case; see python/tests/_vectors.py for the format.
type vector struct {
	Name      string            `json:"name"`
	Op        string            `json:"op"`   // "apply" (default without yaml) or "resolve"
	Base      *string           `json:"base"` // apply: the profile whose presets start (default local)
	Config    map[string]any    `json:"config"`
	Env       map[string]string `json:"env"`
	YAML      *string           `json:"yaml"`
	Profile   string            `json:"profile"`
	Overrides map[string]string `json:"overrides"`
	Expect    struct {
		OK            bool           `json:"ok"`
		Config        map[string]any `json:"config"`
		Kind          string         `json:"kind"`
		Message       *string        `json:"message"`
		MessagePrefix *string        `json:"message_prefix"`
	} `json:"expect"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatalf("vectors.json: %v", err)
	}
	if len(vs) == 0 {
		t.Fatal("vectors.json holds no cases")
	}
	return vs
}

// run evaluates a vector; yamlPath is where its YAML text (if any) is written.
func (v vector) run(yamlPath string) (DiffusionQuantConfig, error) {
	var lookup func(string) (string, bool)
	if v.Env != nil {
		lookup = func(k string) (string, bool) {
			val, ok := v.Env[k]
			return val, ok
		}
	}
	op := v.Op
	if op == "" {
		op = "apply"
		if v.YAML != nil {
			op = "resolve"
		}
	}
	switch op {
	case "resolve":
		o := Options{Profile: v.Profile, Lookup: lookup, Overrides: v.Overrides}
		if v.YAML != nil {
			if err := os.WriteFile(yamlPath, []byte(*v.YAML), 0o600); err != nil {
				return DiffusionQuantConfig{}, err
			}
			o.YAMLPath = yamlPath
		}
		return Resolve(o)
	case "apply":
		base := Local
		if v.Base != nil {
			base = Profile(*v.Base)
		}
		c := FromProfile(base)
		if v.Config != nil {
			if err := c.ApplyMap(v.Config); err != nil {
				return DiffusionQuantConfig{}, err
			}
		}
		if lookup != nil {
			if err := c.ApplyEnv(lookup); err != nil {
				return DiffusionQuantConfig{}, err
			}
		}
		return c, c.Validate()
	}
	panic("vectors.json: unknown op " + op)
}

func TestVectors(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range loadVectors(t) {
		if seen[v.Name] {
			t.Errorf("duplicate vector name %q", v.Name)
		}
		seen[v.Name] = true
		t.Run(v.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			got, err := v.run(path)
			if v.Expect.OK {
				if err != nil {
					t.Fatalf("error %v, want ok", err)
				}
				raw, err := json.Marshal(got)
				if err != nil {
					t.Fatal(err)
				}
				var m map[string]any
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(m, v.Expect.Config) {
					t.Errorf("config\n got  %v\n want %v", m, v.Expect.Config)
				}
				return
			}
			if err == nil {
				t.Fatalf("ok (%+v), want %s", got, v.Expect.Kind)
			}
			if k := Kind(err); k != v.Expect.Kind {
				t.Errorf("Kind = %q, want %q (%v)", k, v.Expect.Kind, err)
			}
			msg := strings.ReplaceAll(err.Error(), path, "{yaml}")
			switch {
			case v.Expect.Message != nil:
				if msg != *v.Expect.Message {
					t.Errorf("message\n got  %s\n want %s", msg, *v.Expect.Message)
				}
			case v.Expect.MessagePrefix != nil:
				if !strings.HasPrefix(msg, *v.Expect.MessagePrefix) {
					t.Errorf("message %q lacks prefix %q", msg, *v.Expect.MessagePrefix)
				}
			default:
				t.Error("an error vector needs message or message_prefix")
			}
		})
	}
}

// TestVectorsCoverage keeps the vectors honest: every validation kind and error kind fails somewhere,
// every profile is checked, and every environment variable has a good and a malformed value.
func TestVectorsCoverage(t *testing.T) {
	vs := loadVectors(t)
	kinds := map[string]bool{}
	envOK, envBad := map[string]bool{}, map[string]bool{}
	profiles := map[string]bool{}
	for _, v := range vs {
		if !v.Expect.OK {
			kinds[v.Expect.Kind] = true
		} else if p, ok := v.Expect.Config["deployment_profile"].(string); ok {
			profiles[p] = true
		}
		if len(v.Env) == 1 {
			for name := range v.Env {
				if v.Expect.OK {
					envOK[name] = true
				} else if v.Expect.Kind == KindEnvError || v.Expect.Message != nil && strings.HasPrefix(*v.Expect.Message, "invalid environment variable") {
					envBad[name] = true
				}
			}
		}
	}
	for _, k := range []string{InvalidBitWidth, InvalidModality, InvalidTimeGroups, InvalidGroupSize, InvalidAccuracy,
		InvalidCalibrationSamples, InvalidProfile, InvalidNumThreads, InvalidTarget, KindUnknownKey, KindParseError, KindEnvError} {
		if !kinds[k] {
			t.Errorf("no vector fails with %s", k)
		}
	}
	for _, p := range Profiles() {
		if !profiles[string(p)] {
			t.Errorf("no valid vector for profile %s", p)
		}
	}
	for _, name := range EnvVars() {
		if !envOK[name] {
			t.Errorf("no vector with a good %s alone", name)
		}
		if !envBad[name] {
			t.Errorf("no vector with a malformed %s alone", name)
		}
	}
}
