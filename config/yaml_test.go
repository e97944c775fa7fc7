package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arrowquant/arrowquant/config"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The guide's "Example 2: Custom YAML Configuration".
const customConfig = `# custom_config.yaml
bit_width: 4
modality: text
num_time_groups: 15
group_size: 128
enable_time_aware: true
enable_spatial: true
min_accuracy: 0.80
calibration_samples: 256
deployment_profile: local
fail_fast: false
num_threads: 8
enable_streaming: false
`

func TestLoadYAMLGuideExample2(t *testing.T) {
	got, err := config.LoadYAML(writeFile(t, "custom_config.yaml", customConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := config.DiffusionQuantConfig{
		BitWidth: 4, Modality: "text", NumTimeGroups: 15, EnableTimeAware: true, GroupSize: 128,
		EnableSpatial: true, MinAccuracy: 0.80, CalibrationSamples: 256, DeploymentProfile: config.Local,
		FailFast: false, NumThreads: 8, EnableStreaming: false,
	}
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestLoadYAMLGuideProfiles(t *testing.T) {
	// The guide's per-profile "Configuration" blocks equal FromProfile.
	blocks := map[config.Profile]string{
		config.Edge: "deployment_profile: edge\nbit_width: 2\nnum_time_groups: 5\ngroup_size: 256\nenable_time_aware: true\n" +
			"enable_spatial: false\nmin_accuracy: 0.65\ncalibration_samples: 32\nenable_streaming: true\nnum_threads: 0\n",
		config.Local: "deployment_profile: local\nbit_width: 4\nnum_time_groups: 10\ngroup_size: 128\nenable_time_aware: true\n" +
			"enable_spatial: true\nmin_accuracy: 0.85\ncalibration_samples: 128\nenable_streaming: false\nnum_threads: 0\n",
		config.Cloud: "deployment_profile: cloud\nbit_width: 8\nnum_time_groups: 20\ngroup_size: 64\nenable_time_aware: true\n" +
			"enable_spatial: true\nmin_accuracy: 0.95\ncalibration_samples: 512\nenable_streaming: false\nnum_threads: 0\n",
	}
	for p, body := range blocks {
		got, err := config.LoadYAML(writeFile(t, string(p)+".yaml", body))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if want := config.FromProfile(p); got != want {
			t.Errorf("%s: got %+v\nwant %+v", p, got, want)
		}
	}
}

func TestLoadYAMLProfileBase(t *testing.T) {
	got, err := config.LoadYAML(writeFile(t, "c.yaml", "deployment_profile: edge\nbit_width: 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := config.FromProfile(config.Edge)
	want.BitWidth = 4
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// Key order does not matter: the profile is the base either way.
	got, err = config.LoadYAML(writeFile(t, "c.yaml", "bit_width: 4\ndeployment_profile: EDGE\n"))
	if err != nil || got != want {
		t.Errorf("profile last: %+v, %v", got, err)
	}
}

func TestLoadYAMLPartialUsesLocal(t *testing.T) {
	got, err := config.LoadYAML(writeFile(t, "c.yaml", "min_accuracy: 0.9\nmodality: null\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.MinAccuracy = 0.9
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestLoadYAMLEmpty(t *testing.T) {
	for name, body := range map[string]string{
		"empty": "", "comments": "# nothing here\n\n", "null": "~\n", "document marker": "---\n",
	} {
		got, err := config.LoadYAML(writeFile(t, "c.yaml", body))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got != config.Default() {
			t.Errorf("%s: got %+v, want local presets", name, got)
		}
	}
}

func TestLoadYAMLValues(t *testing.T) {
	tests := []struct {
		body  string
		check func(config.DiffusionQuantConfig) bool
	}{
		{"modality: Audio\n", func(c config.DiffusionQuantConfig) bool { return c.Modality == "audio" }},
		{"min_accuracy: 1\n", func(c config.DiffusionQuantConfig) bool { return c.MinAccuracy == 1 }},
		{"min_accuracy: 7.5e-1\n", func(c config.DiffusionQuantConfig) bool { return c.MinAccuracy == 0.75 }},
		{"fail_fast: yes\n", func(c config.DiffusionQuantConfig) bool { return c.FailFast }},
		{"fail_fast: 1\n", func(c config.DiffusionQuantConfig) bool { return c.FailFast }},
		{"enable_spatial: False\n", func(c config.DiffusionQuantConfig) bool { return !c.EnableSpatial }},
		{"bit_width: &n 8\nnum_threads: *n\n", func(c config.DiffusionQuantConfig) bool { return c.BitWidth == 8 && c.NumThreads == 8 }},
		{"{bit_width: 2, group_size: 64}\n", func(c config.DiffusionQuantConfig) bool { return c.BitWidth == 2 && c.GroupSize == 64 }},
	}
	for _, tt := range tests {
		got, err := config.LoadYAML(writeFile(t, "c.yaml", tt.body))
		if err != nil {
			t.Errorf("%q: %v", tt.body, err)
			continue
		}
		if !tt.check(got) {
			t.Errorf("%q: got %+v", tt.body, got)
		}
	}
}

func TestLoadYAMLUnknownKey(t *testing.T) {
	path := writeFile(t, "config.yaml", "# comment\nbit_width: 4\nbitwidth: 4\n")
	_, err := config.LoadYAML(path)
	var uke *config.UnknownKeyError
	if !errors.As(err, &uke) {
		t.Fatalf("err = %v, want *UnknownKeyError", err)
	}
	if uke.Key != "bitwidth" || uke.Source != path || uke.Line != 3 {
		t.Errorf("got %+v", uke)
	}
	wantPrefix := path + `: line 3: unknown key "bitwidth" (valid keys: bit_width, modality, num_time_groups,`
	if !strings.HasPrefix(err.Error(), wantPrefix) {
		t.Errorf("Error() = %q\nwant prefix %q", err, wantPrefix)
	}
	if config.Kind(err) != config.KindUnknownKey {
		t.Errorf("Kind = %q", config.Kind(err))
	}
}

func TestLoadYAMLErrors(t *testing.T) {
	tests := []struct {
		name, body string
		kind       string
		key, value string
		line       int
		msg        string // substring of Error()
	}{
		{"string for int", "bit_width: four\n", config.KindParseError, "bit_width", "four", 1, "expected an integer, got a string"},
		{"quoted int", "bit_width: \"4\"\n", config.KindParseError, "bit_width", "4", 1, "expected an integer, got a string"},
		{"float for int", "\nbit_width: 4.0\n", config.KindParseError, "bit_width", "4.0", 2, "expected an integer, got a float"},
		{"hex int", "group_size: 0x80\n", config.KindParseError, "group_size", "0x80", 1, "base-10"},
		{"null int", "num_threads:\n", config.KindParseError, "num_threads", "", 1, "got null"},
		{"list for int", "bit_width: [4]\n", config.KindParseError, "bit_width", "<a sequence>", 1, "got a sequence"},
		{"string for float", "min_accuracy: high\n", config.KindParseError, "min_accuracy", "high", 1, "expected a number"},
		{"bad bool", "fail_fast: maybe\n", config.KindParseError, "fail_fast", "maybe", 1, "expected true, false, 1, 0, yes or no"},
		{"quoted bool", "fail_fast: \"true\"\n", config.KindParseError, "fail_fast", "true", 1, "expected a boolean"},
		{"bad modality", "modality: video\n", config.InvalidModality, "modality", "video", 1, `InvalidModality("video")`},
		{"bad profile", "deployment_profile: mobile\n", config.InvalidProfile, "deployment_profile", "mobile", 1, `InvalidProfile("mobile")`},
		{"duplicate", "bit_width: 2\nbit_width: 8\n", config.KindParseError, "bit_width", "8", 2, "duplicate key (first set on line 1)"},
		{"not a mapping", "- bit_width: 4\n", config.KindParseError, "", "", 1, "expected a mapping"},
		{"syntax", "bit_width: [4\n", config.KindParseError, "", "", 0, "yaml:"},
		{"two documents", "bit_width: 4\n---\nbit_width: 8\n", config.KindParseError, "", "", 2, "multiple YAML documents"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "config.yaml", tt.body)
			got, err := config.LoadYAML(path)
			if got != (config.DiffusionQuantConfig{}) {
				t.Errorf("config on error = %+v, want zero", got)
			}
			if k := config.Kind(err); k != tt.kind {
				t.Fatalf("err = %v, Kind %q, want %q", err, k, tt.kind)
			}
			var pe *config.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %#v, want *ParseError", err)
			}
			if pe.Key != tt.key || pe.Value != tt.value || pe.Source != path || pe.Line != tt.line {
				t.Errorf("ParseError = %+v, want key %q value %q line %d", pe, tt.key, tt.value, tt.line)
			}
			if !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Error() = %q, want file prefix and %q", err, tt.msg)
			}
			if tt.key != "" && !strings.Contains(err.Error(), tt.key) {
				t.Errorf("Error() = %q does not name %s", err, tt.key)
			}
		})
	}
}

func TestLoadYAMLValidates(t *testing.T) {
	_, err := config.LoadYAML(writeFile(t, "c.yaml", "bit_width: 3\n"))
	var ve *config.ValidationError
	if !errors.As(err, &ve) || ve.Kind != config.InvalidBitWidth || !strings.HasPrefix(err.Error(), "InvalidBitWidth(3)") {
		t.Errorf("err = %v, want InvalidBitWidth(3)", err)
	}
}

func TestLoadYAMLMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := config.LoadYAML(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("Error() = %q does not name the path", err)
	}
}

func TestExampleConfigIsLocalProfile(t *testing.T) {
	got, err := config.LoadYAML("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := config.FromProfile(config.Local); got != want {
		t.Errorf("config.example.yaml = %+v\nwant %+v", got, want)
	}
	// Every key is present, so the file is a complete template.
	data, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range config.Keys() {
		if !strings.Contains(string(data), "\n"+key+": ") {
			t.Errorf("config.example.yaml lacks key %s", key)
		}
	}
	for _, v := range config.EnvVars() {
		if !strings.Contains(string(data), v) {
			t.Errorf("config.example.yaml does not mention %s", v)
		}
	}
}
