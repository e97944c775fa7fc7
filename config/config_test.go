package config_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/arrowquant/arrowquant/config"
)

func TestFromProfilePresets(t *testing.T) {
	// The guide's "Profile Presets" table; fail_fast, num_threads and modality
	// are the same for every profile.
	tests := []struct {
		p                  config.Profile
		bitWidth           int
		numTimeGroups      int
		groupSize          int
		enableTimeAware    bool
		enableSpatial      bool
		minAccuracy        float64
		calibrationSamples int
		enableStreaming    bool
	}{
		{config.Edge, 2, 5, 256, true, false, 0.65, 32, true},
		{config.Local, 4, 10, 128, true, true, 0.85, 128, false},
		{config.Cloud, 8, 20, 64, true, true, 0.95, 512, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.p), func(t *testing.T) {
			c := config.FromProfile(tt.p)
			check := func(name string, got, want any) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			check("bit_width", c.BitWidth, tt.bitWidth)
			check("num_time_groups", c.NumTimeGroups, tt.numTimeGroups)
			check("group_size", c.GroupSize, tt.groupSize)
			check("enable_time_aware", c.EnableTimeAware, tt.enableTimeAware)
			check("enable_spatial", c.EnableSpatial, tt.enableSpatial)
			check("min_accuracy", c.MinAccuracy, tt.minAccuracy)
			check("calibration_samples", c.CalibrationSamples, tt.calibrationSamples)
			check("enable_streaming", c.EnableStreaming, tt.enableStreaming)
			check("deployment_profile", c.DeploymentProfile, tt.p)
			check("fail_fast", c.FailFast, false)
			check("num_threads", c.NumThreads, 0)
			check("modality", c.Modality, "")
			if err := c.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
	if got, want := config.Default(), config.FromProfile(config.Local); got != want {
		t.Errorf("Default() = %+v, want local %+v", got, want)
	}
}

func TestFromProfileUnknownFailsValidation(t *testing.T) {
	err := config.FromProfile("tiny").Validate()
	if config.Kind(err) != config.InvalidProfile {
		t.Fatalf("Validate() = %v, want InvalidProfile", err)
	}
}

func TestProfiles(t *testing.T) {
	want := []config.Profile{config.Edge, config.Local, config.Cloud}
	if got := config.Profiles(); !reflect.DeepEqual(got, want) {
		t.Errorf("Profiles() = %v, want %v", got, want)
	}
}

func TestParseProfile(t *testing.T) {
	for in, want := range map[string]config.Profile{"edge": config.Edge, " Local ": config.Local, "CLOUD": config.Cloud} {
		if got, err := config.ParseProfile(in); err != nil || got != want {
			t.Errorf("ParseProfile(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "server", "edge2"} {
		_, err := config.ParseProfile(in)
		var upe *config.UnknownProfileError
		if !errors.As(err, &upe) || upe.Value != in {
			t.Errorf("ParseProfile(%q) error = %v, want *UnknownProfileError", in, err)
			continue
		}
		if !errors.Is(err, config.ErrValidation) {
			t.Errorf("ParseProfile(%q): errors.Is(ErrValidation) = false", in)
		}
		if !strings.HasPrefix(err.Error(), `InvalidProfile("`+in+`")`) || !strings.Contains(err.Error(), "edge, local or cloud") {
			t.Errorf("ParseProfile(%q) error = %q", in, err)
		}
	}
}

func TestParseModality(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "null": "", "NULL": "", "auto": "", " text ": "text", "Code": "code", "image": "image", "AUDIO": "audio",
	} {
		if got, err := config.ParseModality(in); err != nil || got != want {
			t.Errorf("ParseModality(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := config.ParseModality("video")
	var ume *config.UnknownModalityError
	if !errors.As(err, &ume) || ume.Value != "video" || !errors.Is(err, config.ErrValidation) {
		t.Fatalf("ParseModality(video) error = %#v", err)
	}
	if !strings.HasPrefix(err.Error(), `InvalidModality("video")`) || !strings.Contains(err.Error(), "text, code, image, audio") {
		t.Errorf("error = %q", err)
	}
	if config.Kind(err) != config.InvalidModality {
		t.Errorf("Kind = %q", config.Kind(err))
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*config.DiffusionQuantConfig)
		kind   string // "" = valid
		msg    string // exact Error() when kind != ""
	}{
		{"bit_width 3", func(c *config.DiffusionQuantConfig) { c.BitWidth = 3 }, config.InvalidBitWidth,
			"InvalidBitWidth(3): bit_width must be 2, 4 or 8"},
		{"bit_width 0", func(c *config.DiffusionQuantConfig) { c.BitWidth = 0 }, config.InvalidBitWidth,
			"InvalidBitWidth(0): bit_width must be 2, 4 or 8"},
		{"bit_width 16", func(c *config.DiffusionQuantConfig) { c.BitWidth = 16 }, config.InvalidBitWidth,
			"InvalidBitWidth(16): bit_width must be 2, 4 or 8"},
		{"bit_width 2", func(c *config.DiffusionQuantConfig) { c.BitWidth = 2 }, "", ""},
		{"bit_width 8", func(c *config.DiffusionQuantConfig) { c.BitWidth = 8 }, "", ""},
		{"modality video", func(c *config.DiffusionQuantConfig) { c.Modality = "video" }, config.InvalidModality,
			`InvalidModality("video"): modality must be text, code, image, audio or null (auto-detect)`},
		{"modality upper case", func(c *config.DiffusionQuantConfig) { c.Modality = "Text" }, config.InvalidModality,
			`InvalidModality("Text"): modality must be text, code, image, audio or null (auto-detect)`},
		{"modality audio", func(c *config.DiffusionQuantConfig) { c.Modality = "audio" }, "", ""},
		{"time groups 0", func(c *config.DiffusionQuantConfig) { c.NumTimeGroups = 0 }, config.InvalidTimeGroups,
			"InvalidTimeGroups(0): num_time_groups must be between 1 and 100"},
		{"time groups 150", func(c *config.DiffusionQuantConfig) { c.NumTimeGroups = 150 }, config.InvalidTimeGroups,
			"InvalidTimeGroups(150): num_time_groups must be between 1 and 100"},
		{"time groups 101", func(c *config.DiffusionQuantConfig) { c.NumTimeGroups = 101 }, config.InvalidTimeGroups,
			"InvalidTimeGroups(101): num_time_groups must be between 1 and 100"},
		{"time groups 1", func(c *config.DiffusionQuantConfig) { c.NumTimeGroups = 1 }, "", ""},
		{"time groups 100", func(c *config.DiffusionQuantConfig) { c.NumTimeGroups = 100 }, "", ""},
		{"group size 100", func(c *config.DiffusionQuantConfig) { c.GroupSize = 100 }, config.InvalidGroupSize,
			"InvalidGroupSize(100): group_size must be 32, 64, 128 or 256"},
		{"group size 512", func(c *config.DiffusionQuantConfig) { c.GroupSize = 512 }, config.InvalidGroupSize,
			"InvalidGroupSize(512): group_size must be 32, 64, 128 or 256"},
		{"group size 32", func(c *config.DiffusionQuantConfig) { c.GroupSize = 32 }, "", ""},
		{"group size 256", func(c *config.DiffusionQuantConfig) { c.GroupSize = 256 }, "", ""},
		{"accuracy 1.5", func(c *config.DiffusionQuantConfig) { c.MinAccuracy = 1.5 }, config.InvalidAccuracy,
			"InvalidAccuracy(1.5): min_accuracy must be between 0.0 and 1.0"},
		{"accuracy -0.1", func(c *config.DiffusionQuantConfig) { c.MinAccuracy = -0.1 }, config.InvalidAccuracy,
			"InvalidAccuracy(-0.1): min_accuracy must be between 0.0 and 1.0"},
		{"accuracy NaN", func(c *config.DiffusionQuantConfig) { c.MinAccuracy = math.NaN() }, config.InvalidAccuracy,
			"InvalidAccuracy(NaN): min_accuracy must be between 0.0 and 1.0"},
		{"accuracy +Inf", func(c *config.DiffusionQuantConfig) { c.MinAccuracy = math.Inf(1) }, config.InvalidAccuracy,
			"InvalidAccuracy(+Inf): min_accuracy must be between 0.0 and 1.0"},
		{"accuracy 0.0", func(c *config.DiffusionQuantConfig) { c.MinAccuracy = 0 }, "", ""},
		{"accuracy 1.0", func(c *config.DiffusionQuantConfig) { c.MinAccuracy = 1 }, "", ""},
		{"calibration 0", func(c *config.DiffusionQuantConfig) { c.CalibrationSamples = 0 }, config.InvalidCalibrationSamples,
			"InvalidCalibrationSamples(0): calibration_samples must be at least 1"},
		{"calibration 1", func(c *config.DiffusionQuantConfig) { c.CalibrationSamples = 1 }, "", ""},
		{"profile empty", func(c *config.DiffusionQuantConfig) { c.DeploymentProfile = "" }, config.InvalidProfile,
			`InvalidProfile(""): deployment_profile must be edge, local or cloud`},
		{"profile upper case", func(c *config.DiffusionQuantConfig) { c.DeploymentProfile = "EDGE" }, config.InvalidProfile,
			`InvalidProfile("EDGE"): deployment_profile must be edge, local or cloud`},
		{"threads -1", func(c *config.DiffusionQuantConfig) { c.NumThreads = -1 }, config.InvalidNumThreads,
			"InvalidNumThreads(-1): num_threads must be 0 (all cores) or more"},
		{"threads 8", func(c *config.DiffusionQuantConfig) { c.NumThreads = 8 }, "", ""},
		{"first failing field wins", func(c *config.DiffusionQuantConfig) { c.BitWidth = 3; c.GroupSize = 100; c.NumThreads = -1 },
			config.InvalidBitWidth, "InvalidBitWidth(3): bit_width must be 2, 4 or 8"},
		{"field order: groups before accuracy", func(c *config.DiffusionQuantConfig) { c.MinAccuracy = 2; c.NumTimeGroups = 0 },
			config.InvalidTimeGroups, "InvalidTimeGroups(0): num_time_groups must be between 1 and 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.kind == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v, want *ValidationError", err)
			}
			if ve.Kind != tt.kind {
				t.Errorf("Kind = %q, want %q", ve.Kind, tt.kind)
			}
			if err.Error() != tt.msg {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.msg)
			}
			if !errors.Is(err, config.ErrValidation) {
				t.Error("errors.Is(err, ErrValidation) = false")
			}
			if got := config.Kind(err); got != tt.kind {
				t.Errorf("Kind(err) = %q, want %q", got, tt.kind)
			}
		})
	}
}

func TestValidationErrorFields(t *testing.T) {
	c := config.Default()
	c.MinAccuracy = 1.5
	var ve *config.ValidationError
	if !errors.As(c.Validate(), &ve) {
		t.Fatal("want *ValidationError")
	}
	if ve.Field != "min_accuracy" || ve.Value != 1.5 {
		t.Errorf("Field, Value = %q, %v", ve.Field, ve.Value)
	}
}

func TestSet(t *testing.T) {
	tests := []struct {
		key, value string
		check      func(config.DiffusionQuantConfig) bool
	}{
		{"bit_width", "8", func(c config.DiffusionQuantConfig) bool { return c.BitWidth == 8 }},
		{"bit_width", " 2 ", func(c config.DiffusionQuantConfig) bool { return c.BitWidth == 2 }},
		{"modality", "Image", func(c config.DiffusionQuantConfig) bool { return c.Modality == "image" }},
		{"modality", "null", func(c config.DiffusionQuantConfig) bool { return c.Modality == "" }},
		{"num_time_groups", "15", func(c config.DiffusionQuantConfig) bool { return c.NumTimeGroups == 15 }},
		{"enable_time_aware", "no", func(c config.DiffusionQuantConfig) bool { return !c.EnableTimeAware }},
		{"group_size", "64", func(c config.DiffusionQuantConfig) bool { return c.GroupSize == 64 }},
		{"enable_spatial", "FALSE", func(c config.DiffusionQuantConfig) bool { return !c.EnableSpatial }},
		{"min_accuracy", "0.7", func(c config.DiffusionQuantConfig) bool { return c.MinAccuracy == 0.7 }},
		{"calibration_samples", "256", func(c config.DiffusionQuantConfig) bool { return c.CalibrationSamples == 256 }},
		{"deployment_profile", "Cloud", func(c config.DiffusionQuantConfig) bool { return c.DeploymentProfile == config.Cloud }},
		{"fail_fast", "YES", func(c config.DiffusionQuantConfig) bool { return c.FailFast }},
		{"fail_fast", "1", func(c config.DiffusionQuantConfig) bool { return c.FailFast }},
		{"num_threads", "4", func(c config.DiffusionQuantConfig) bool { return c.NumThreads == 4 }},
		{"num_threads", "-1", func(c config.DiffusionQuantConfig) bool { return c.NumThreads == -1 }}, // Validate's job
		{"enable_streaming", "true", func(c config.DiffusionQuantConfig) bool { return c.EnableStreaming }},
	}
	for _, tt := range tests {
		c := config.Default()
		if err := c.Set(tt.key, tt.value); err != nil {
			t.Errorf("Set(%q, %q) = %v", tt.key, tt.value, err)
			continue
		}
		if !tt.check(c) {
			t.Errorf("Set(%q, %q) gave %+v", tt.key, tt.value, c)
		}
	}
	// Setting the profile does not re-base the other fields.
	c := config.Default()
	if err := c.Set("deployment_profile", "edge"); err != nil || c.BitWidth != 4 {
		t.Errorf("Set(deployment_profile, edge): err %v, bit_width %d", err, c.BitWidth)
	}
}

func TestSetErrors(t *testing.T) {
	tests := []struct{ key, value, kind string }{
		{"bit_width", "abc", config.KindParseError},
		{"bit_width", "0x10", config.KindParseError},
		{"bit_width", "4.0", config.KindParseError},
		{"bit_width", "", config.KindParseError},
		{"num_threads", "99999999999999999999", config.KindParseError},
		{"min_accuracy", "high", config.KindParseError},
		{"fail_fast", "maybe", config.KindParseError},
		{"fail_fast", "on", config.KindParseError},
		{"modality", "video", config.InvalidModality},
		{"deployment_profile", "server", config.InvalidProfile},
		{"bitwidth", "4", config.KindUnknownKey},
	}
	for _, tt := range tests {
		c := config.Default()
		err := c.Set(tt.key, tt.value)
		if got := config.Kind(err); got != tt.kind {
			t.Errorf("Set(%q, %q) = %v, Kind %q; want %q", tt.key, tt.value, err, got, tt.kind)
		}
		if c != config.Default() {
			t.Errorf("Set(%q, %q) changed the config on error", tt.key, tt.value)
		}
		if tt.kind == config.KindUnknownKey {
			var uke *config.UnknownKeyError
			if !errors.As(err, &uke) || uke.Key != tt.key {
				t.Errorf("want *UnknownKeyError for %q, got %#v", tt.key, err)
			}
			continue
		}
		var pe *config.ParseError
		if !errors.As(err, &pe) || pe.Key != tt.key || pe.Value != tt.value {
			t.Errorf("Set(%q, %q): want *ParseError naming key and value, got %#v", tt.key, tt.value, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.key) || !strings.Contains(err.Error(), `"`+tt.value+`"`) {
			t.Errorf("Error() = %q does not name key and value", err)
		}
	}
}

func TestKindOther(t *testing.T) {
	if got := config.Kind(nil); got != "" {
		t.Errorf("Kind(nil) = %q", got)
	}
	if got := config.Kind(errors.New("boom")); got != "" {
		t.Errorf("Kind(other) = %q", got)
	}
}

func TestMarshalJSON(t *testing.T) {
	c := config.FromProfile(config.Edge)
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"bit_width":2,"modality":null,"num_time_groups":5,"enable_time_aware":true,"group_size":256,` +
		`"enable_spatial":false,"min_accuracy":0.65,"calibration_samples":32,"deployment_profile":"edge",` +
		`"fail_fast":false,"num_threads":0,"enable_streaming":true,"target":null}`
	if string(b) != want {
		t.Errorf("json = %s\nwant   %s", b, want)
	}
	c.Modality = "code"
	if b, _ = json.Marshal(&c); !strings.Contains(string(b), `"modality":"code"`) {
		t.Errorf("json = %s, want modality code", b)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, c := range []config.DiffusionQuantConfig{
		config.FromProfile(config.Edge),
		config.FromProfile(config.Cloud),
		{BitWidth: 4, Modality: "text", NumTimeGroups: 15, EnableTimeAware: false, GroupSize: 32, EnableSpatial: true,
			MinAccuracy: 0.8123456789, CalibrationSamples: 7, DeploymentProfile: config.Local, FailFast: true,
			NumThreads: 3, EnableStreaming: true},
	} {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var got config.DiffusionQuantConfig
		if err := got.ApplyMap(m); err != nil {
			t.Fatalf("ApplyMap(%s) = %v", b, err)
		}
		if got != c {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, c)
		}
	}
}

func TestMarshalJSONNaN(t *testing.T) {
	c := config.Default()
	c.MinAccuracy = math.NaN()
	if _, err := json.Marshal(c); err == nil {
		t.Error("want an error for NaN min_accuracy")
	}
}

func TestApplyMap(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal([]byte(`{"bit_width":2.0,"modality":"TEXT","min_accuracy":1,"fail_fast":true,
		"deployment_profile":"cloud","num_threads":4}`), &m); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	if err := c.ApplyMap(m); err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.BitWidth, want.Modality, want.MinAccuracy, want.FailFast = 2, "text", 1, true
	want.DeploymentProfile, want.NumThreads = config.Cloud, 4 // only the field; no re-basing
	if c != want {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}

	c.Modality = "text"
	if err := c.ApplyMap(map[string]any{"modality": nil}); err != nil || c.Modality != "" {
		t.Errorf("modality null: err %v, modality %q", err, c.Modality)
	}

	// json.Number from a Decoder with UseNumber.
	dec := json.NewDecoder(strings.NewReader(`{"bit_width":8,"min_accuracy":0.9,"group_size":64.0}`))
	dec.UseNumber()
	m = nil
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	c = config.Default()
	if err := c.ApplyMap(m); err != nil || c.BitWidth != 8 || c.MinAccuracy != 0.9 || c.GroupSize != 64 {
		t.Errorf("json.Number: err %v, %+v", err, c)
	}
}

func TestApplyMapErrors(t *testing.T) {
	tests := []struct {
		json  string
		kind  string
		key   string
		value string
	}{
		{`{"bit_width":4.5}`, config.KindParseError, "bit_width", "4.5"},
		{`{"bit_width":"4"}`, config.KindParseError, "bit_width", "4"},
		{`{"bit_width":1e30}`, config.KindParseError, "bit_width", "1e+30"},
		{`{"bit_width":null}`, config.KindParseError, "bit_width", "null"},
		{`{"min_accuracy":"0.85"}`, config.KindParseError, "min_accuracy", "0.85"},
		{`{"fail_fast":1}`, config.KindParseError, "fail_fast", "1"},
		{`{"fail_fast":"true"}`, config.KindParseError, "fail_fast", "true"},
		{`{"modality":3}`, config.KindParseError, "modality", "3"},
		{`{"modality":"video"}`, config.InvalidModality, "modality", "video"},
		{`{"deployment_profile":"huge"}`, config.InvalidProfile, "deployment_profile", "huge"},
		{`{"deployment_profile":null}`, config.KindParseError, "deployment_profile", "null"},
		{`{"group_size":[64]}`, config.KindParseError, "group_size", "[64]"},
		{`{"bitwidth":4}`, config.KindUnknownKey, "bitwidth", ""},
		// Sorted key order: the unknown "aaa" is reported before the bad bit_width.
		{`{"bit_width":4.5,"aaa":1}`, config.KindUnknownKey, "aaa", ""},
	}
	for _, tt := range tests {
		var m map[string]any
		if err := json.Unmarshal([]byte(tt.json), &m); err != nil {
			t.Fatal(err)
		}
		c := config.Default()
		err := c.ApplyMap(m)
		if got := config.Kind(err); got != tt.kind {
			t.Errorf("ApplyMap(%s) = %v, Kind %q; want %q", tt.json, err, got, tt.kind)
			continue
		}
		if c != config.Default() {
			t.Errorf("ApplyMap(%s) changed the config on error", tt.json)
		}
		if tt.kind == config.KindUnknownKey {
			var uke *config.UnknownKeyError
			if !errors.As(err, &uke) || uke.Key != tt.key || !strings.Contains(err.Error(), "valid keys: bit_width, modality") {
				t.Errorf("ApplyMap(%s) = %v", tt.json, err)
			}
			continue
		}
		var pe *config.ParseError
		if !errors.As(err, &pe) || pe.Key != tt.key || pe.Value != tt.value {
			t.Errorf("ApplyMap(%s) = %#v, want *ParseError{Key: %q, Value: %q}", tt.json, err, tt.key, tt.value)
		}
	}
}

func TestKeysAndEnvVars(t *testing.T) {
	wantKeys := []string{"bit_width", "modality", "num_time_groups", "enable_time_aware", "group_size", "enable_spatial",
		"min_accuracy", "calibration_samples", "deployment_profile", "fail_fast", "num_threads", "enable_streaming", "target"}
	if got := config.Keys(); !reflect.DeepEqual(got, wantKeys) {
		t.Errorf("Keys() = %v", got)
	}
	wantVars := []string{"ARROW_QUANT_BIT_WIDTH", "ARROW_QUANT_NUM_TIME_GROUPS", "ARROW_QUANT_GROUP_SIZE",
		"ARROW_QUANT_MIN_ACCURACY", "ARROW_QUANT_CALIBRATION_SAMPLES", "ARROW_QUANT_FAIL_FAST", "ARROW_QUANT_NUM_THREADS",
		"ARROW_QUANT_ENABLE_STREAMING", "ARROW_QUANT_DEPLOYMENT_PROFILE", "ARROW_QUANT_MODALITY", "ARROW_QUANT_TARGET"}
	if got := config.EnvVars(); !reflect.DeepEqual(got, wantVars) {
		t.Errorf("EnvVars() = %v", got)
	}
}
