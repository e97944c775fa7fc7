package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/arrowquant/arrowquant/config"
)

// env returns a lookup function backed by m (never the process environment).
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestApplyEnv(t *testing.T) {
	c := config.Default()
	err := c.ApplyEnv(env(map[string]string{
		"ARROW_QUANT_BIT_WIDTH":           "2",
		"ARROW_QUANT_NUM_TIME_GROUPS":     "5",
		"ARROW_QUANT_GROUP_SIZE":          "256",
		"ARROW_QUANT_MIN_ACCURACY":        "0.70",
		"ARROW_QUANT_CALIBRATION_SAMPLES": "64",
		"ARROW_QUANT_FAIL_FAST":           "TRUE",
		"ARROW_QUANT_NUM_THREADS":         "4",
		"ARROW_QUANT_ENABLE_STREAMING":    "yes",
		"ARROW_QUANT_DEPLOYMENT_PROFILE":  "cloud",
		"ARROW_QUANT_MODALITY":            "code",
		"ARROW_QUANT_ENABLE_SPATIAL":      "false", // not a supported variable: ignored
		"BIT_WIDTH":                       "8",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.DiffusionQuantConfig{
		BitWidth: 2, Modality: "code", NumTimeGroups: 5, EnableTimeAware: true, GroupSize: 256, EnableSpatial: true,
		MinAccuracy: 0.70, CalibrationSamples: 64, DeploymentProfile: config.Cloud, FailFast: true, NumThreads: 4,
		EnableStreaming: true,
	}
	if c != want {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestApplyEnvEmptyIsUnset(t *testing.T) {
	c := config.Default()
	if err := c.ApplyEnv(env(map[string]string{"ARROW_QUANT_BIT_WIDTH": "", "ARROW_QUANT_FAIL_FAST": "  "})); err != nil {
		t.Fatal(err)
	}
	if c != config.Default() {
		t.Errorf("empty values changed the config: %+v", c)
	}
}

func TestApplyEnvErrors(t *testing.T) {
	tests := []struct {
		vars     map[string]string
		bad, val string
		kind     string
	}{
		{map[string]string{"ARROW_QUANT_BIT_WIDTH": "abc"}, "ARROW_QUANT_BIT_WIDTH", "abc", config.KindEnvError},
		{map[string]string{"ARROW_QUANT_FAIL_FAST": "maybe"}, "ARROW_QUANT_FAIL_FAST", "maybe", config.KindEnvError},
		{map[string]string{"ARROW_QUANT_MIN_ACCURACY": "0,85"}, "ARROW_QUANT_MIN_ACCURACY", "0,85", config.KindEnvError},
		{map[string]string{"ARROW_QUANT_NUM_THREADS": "4.0"}, "ARROW_QUANT_NUM_THREADS", "4.0", config.KindEnvError},
		{map[string]string{"ARROW_QUANT_DEPLOYMENT_PROFILE": "mobile"}, "ARROW_QUANT_DEPLOYMENT_PROFILE", "mobile", config.InvalidProfile},
		{map[string]string{"ARROW_QUANT_MODALITY": "video"}, "ARROW_QUANT_MODALITY", "video", config.InvalidModality},
		// A valid variable before the bad one is not applied either.
		{map[string]string{"ARROW_QUANT_BIT_WIDTH": "2", "ARROW_QUANT_ENABLE_STREAMING": "on"}, "ARROW_QUANT_ENABLE_STREAMING", "on", config.KindEnvError},
	}
	for _, tt := range tests {
		c := config.Default()
		err := c.ApplyEnv(env(tt.vars))
		var ee *config.EnvError
		if !errors.As(err, &ee) {
			t.Errorf("%v: err = %v, want *EnvError", tt.vars, err)
			continue
		}
		if ee.Var != tt.bad || ee.Value != tt.val || ee.Err == nil {
			t.Errorf("EnvError = %+v, want Var %s Value %q", ee, tt.bad, tt.val)
		}
		if !strings.Contains(err.Error(), tt.bad) || !strings.Contains(err.Error(), `"`+tt.val+`"`) {
			t.Errorf("Error() = %q", err)
		}
		if got := config.Kind(err); got != tt.kind {
			t.Errorf("Kind = %q, want %q", got, tt.kind)
		}
		if c != config.Default() {
			t.Errorf("%v: config changed on error: %+v", tt.vars, c)
		}
	}
}

func TestResolveDefaults(t *testing.T) {
	got, err := config.Resolve(config.Options{})
	if err != nil || got != config.Default() {
		t.Errorf("Resolve({}) = %+v, %v", got, err)
	}
}

func TestResolvePrecedence(t *testing.T) {
	path := writeFile(t, "config.yaml", "bit_width: 2\nnum_time_groups: 15\ngroup_size: 64\nmin_accuracy: 0.75\n")
	lookup := env(map[string]string{
		"ARROW_QUANT_NUM_TIME_GROUPS": "20",
		"ARROW_QUANT_GROUP_SIZE":      "32",
	})
	got, err := config.Resolve(config.Options{
		YAMLPath:  path,
		Lookup:    lookup,
		Overrides: map[string]string{"group_size": "256", "fail_fast": "true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.BitWidth = 2       // YAML over preset
	want.MinAccuracy = 0.75 // YAML over preset
	want.NumTimeGroups = 20 // env over YAML
	want.GroupSize = 256    // override over env over YAML
	want.FailFast = true    // override over preset
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestResolveDockerExample(t *testing.T) {
	// The guide's Docker example.
	got, err := config.Resolve(config.Options{Lookup: env(map[string]string{
		"ARROW_QUANT_BIT_WIDTH":          "2",
		"ARROW_QUANT_DEPLOYMENT_PROFILE": "edge",
		"ARROW_QUANT_ENABLE_STREAMING":   "true",
	})})
	if err != nil {
		t.Fatal(err)
	}
	if want := config.FromProfile(config.Edge); got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestResolveEnvProfileRebasesOverYAML(t *testing.T) {
	path := writeFile(t, "config.yaml", "deployment_profile: cloud\nmin_accuracy: 0.9\n")
	got, err := config.Resolve(config.Options{
		YAMLPath: path,
		Lookup:   env(map[string]string{"ARROW_QUANT_DEPLOYMENT_PROFILE": "edge"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := config.FromProfile(config.Edge)
	want.MinAccuracy = 0.9 // the file's explicit key still applies
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestResolveCLIProfileWins(t *testing.T) {
	path := writeFile(t, "config.yaml", "deployment_profile: edge\n")
	got, err := config.Resolve(config.Options{
		Profile:  "Cloud",
		YAMLPath: path,
		Lookup:   env(map[string]string{"ARROW_QUANT_DEPLOYMENT_PROFILE": "edge", "ARROW_QUANT_BIT_WIDTH": "4"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := config.FromProfile(config.Cloud)
	want.BitWidth = 4
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestResolveOverrideProfile(t *testing.T) {
	lookup := env(map[string]string{"ARROW_QUANT_DEPLOYMENT_PROFILE": "cloud"})
	got, err := config.Resolve(config.Options{Lookup: lookup, Overrides: map[string]string{"deployment_profile": "edge"}})
	if err != nil || got != config.FromProfile(config.Edge) {
		t.Errorf("override profile: %+v, %v", got, err)
	}
	// Options.Profile beats an override naming a profile.
	got, err = config.Resolve(config.Options{Profile: "local", Overrides: map[string]string{"deployment_profile": "edge"}})
	if err != nil || got != config.Default() {
		t.Errorf("Profile over override: %+v, %v", got, err)
	}
}

func TestResolveErrors(t *testing.T) {
	goodYAML := writeFile(t, "ok.yaml", "bit_width: 8\n")
	tests := []struct {
		name string
		o    config.Options
		kind string
		msg  string
	}{
		{"env bit width", config.Options{Lookup: env(map[string]string{"ARROW_QUANT_BIT_WIDTH": "abc"})},
			config.KindEnvError, "ARROW_QUANT_BIT_WIDTH"},
		{"env invalid after merge", config.Options{YAMLPath: goodYAML, Lookup: env(map[string]string{"ARROW_QUANT_BIT_WIDTH": "3"})},
			config.InvalidBitWidth, "InvalidBitWidth(3)"},
		{"bad CLI profile", config.Options{Profile: "mobile"}, config.InvalidProfile, `InvalidProfile("mobile")`},
		{"override unknown key", config.Options{Overrides: map[string]string{"bits": "4"}}, config.KindUnknownKey,
			`override: unknown key "bits"`},
		{"override bad value", config.Options{Overrides: map[string]string{"num_threads": "many"}}, config.KindParseError,
			`override: invalid value "many" for num_threads`},
		{"override invalid", config.Options{Overrides: map[string]string{"min_accuracy": "1.5"}}, config.InvalidAccuracy,
			"InvalidAccuracy(1.5): min_accuracy must be between 0.0 and 1.0"},
		// A malformed low-precedence value is reported even when overridden.
		{"bad env hidden by override", config.Options{
			Lookup:    env(map[string]string{"ARROW_QUANT_NUM_THREADS": "x"}),
			Overrides: map[string]string{"num_threads": "2"},
		}, config.KindEnvError, "ARROW_QUANT_NUM_THREADS"},
		{"missing YAML", config.Options{YAMLPath: goodYAML + ".missing"}, "", ".missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Resolve(tt.o)
			if err == nil {
				t.Fatalf("Resolve = %+v, want error", got)
			}
			if k := config.Kind(err); k != tt.kind {
				t.Errorf("Kind(%v) = %q, want %q", err, k, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Error() = %q, want %q", err, tt.msg)
			}
		})
	}
}

func TestResolveOverridesSortedOrder(t *testing.T) {
	// Overrides apply in sorted key order, so the reported error is the first
	// bad key in that order.
	_, err := config.Resolve(config.Options{Overrides: map[string]string{"num_threads": "x", "bit_width": "y", "group_size": "z"}})
	var pe *config.ParseError
	if !errors.As(err, &pe) || pe.Key != "bit_width" || pe.Source != "override" {
		t.Errorf("err = %#v, want ParseError for bit_width", err)
	}
}

func TestLoadYAMLEqualsResolve(t *testing.T) {
	path := writeFile(t, "c.yaml", "deployment_profile: cloud\nnum_threads: 2\n")
	a, errA := config.LoadYAML(path)
	b, errB := config.Resolve(config.Options{YAMLPath: path})
	if errA != nil || errB != nil || a != b {
		t.Errorf("LoadYAML = %+v, %v; Resolve = %+v, %v", a, errA, b, errB)
	}
}
