package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

type valueKind int

const (
	kindInt valueKind = iota
	kindFloat
	kindBool
	kindModality
	kindProfile
	kindTarget
)

// field describes one parameter: its key, its environment variable ("" if
// none) and how to reach it.
type field struct {
	key  string
	env  string
	kind valueKind
	ptr  func(*DiffusionQuantConfig) any
}

// fields lists the parameters in struct order.
var fields = []*field{
	{"bit_width", "ARROW_QUANT_BIT_WIDTH", kindInt, func(c *DiffusionQuantConfig) any { return &c.BitWidth }},
	{"modality", "ARROW_QUANT_MODALITY", kindModality, func(c *DiffusionQuantConfig) any { return &c.Modality }},
	{"num_time_groups", "ARROW_QUANT_NUM_TIME_GROUPS", kindInt, func(c *DiffusionQuantConfig) any { return &c.NumTimeGroups }},
	{"enable_time_aware", "", kindBool, func(c *DiffusionQuantConfig) any { return &c.EnableTimeAware }},
	{"group_size", "ARROW_QUANT_GROUP_SIZE", kindInt, func(c *DiffusionQuantConfig) any { return &c.GroupSize }},
	{"enable_spatial", "", kindBool, func(c *DiffusionQuantConfig) any { return &c.EnableSpatial }},
	{"min_accuracy", "ARROW_QUANT_MIN_ACCURACY", kindFloat, func(c *DiffusionQuantConfig) any { return &c.MinAccuracy }},
	{"calibration_samples", "ARROW_QUANT_CALIBRATION_SAMPLES", kindInt, func(c *DiffusionQuantConfig) any { return &c.CalibrationSamples }},
	{"deployment_profile", "ARROW_QUANT_DEPLOYMENT_PROFILE", kindProfile, func(c *DiffusionQuantConfig) any { return &c.DeploymentProfile }},
	{"fail_fast", "ARROW_QUANT_FAIL_FAST", kindBool, func(c *DiffusionQuantConfig) any { return &c.FailFast }},
	{"num_threads", "ARROW_QUANT_NUM_THREADS", kindInt, func(c *DiffusionQuantConfig) any { return &c.NumThreads }},
	{"enable_streaming", "ARROW_QUANT_ENABLE_STREAMING", kindBool, func(c *DiffusionQuantConfig) any { return &c.EnableStreaming }},
	{"target", "ARROW_QUANT_TARGET", kindTarget, func(c *DiffusionQuantConfig) any { return &c.Target }},
}

// envOrder lists the keys with an environment variable, in the guide's order.
var envOrder = []string{
	"bit_width", "num_time_groups", "group_size", "min_accuracy", "calibration_samples",
	"fail_fast", "num_threads", "enable_streaming", "deployment_profile", "modality", "target",
}

const profileKey = "deployment_profile"

func lookupField(key string) *field {
	for _, f := range fields {
		if f.key == key {
			return f
		}
	}
	return nil
}

// Keys returns the parameter keys in struct order.
func Keys() []string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	return keys
}

// EnvVars returns the ARROW_QUANT_* variables read by ApplyEnv, in the
// guide's order, followed by ARROW_QUANT_DEPLOYMENT_PROFILE,
// ARROW_QUANT_MODALITY and ARROW_QUANT_TARGET.
func EnvVars() []string {
	vars := make([]string, len(envOrder))
	for i, k := range envOrder {
		vars[i] = lookupField(k).env
	}
	return vars
}

func (f *field) get(c *DiffusionQuantConfig) any {
	switch p := f.ptr(c).(type) {
	case *int:
		return *p
	case *float64:
		return *p
	case *bool:
		return *p
	case *string:
		return *p
	case *Profile:
		return *p
	}
	panic("config: unhandled field type for " + f.key)
}

func (f *field) set(c *DiffusionQuantConfig, v any) {
	switch p := f.ptr(c).(type) {
	case *int:
		*p = v.(int)
	case *float64:
		*p = v.(float64)
	case *bool:
		*p = v.(bool)
	case *string:
		*p = v.(string)
	case *Profile:
		*p = v.(Profile)
	default:
		panic("config: unhandled field type for " + f.key)
	}
}

// setting is a parsed value for one field; a patch is an ordered list of them.
type setting struct {
	f   *field
	v   any
	src string // where the value came from: "config.yaml:4", "ARROW_QUANT_BIT_WIDTH", ...
}

type patch []setting

// apply sets p's fields on c; with from, it records each field's source.
func (p patch) apply(c *DiffusionQuantConfig, skipProfile bool, from map[string]string) {
	for _, s := range p {
		if skipProfile && s.f.key == profileKey {
			continue
		}
		s.f.set(c, s.v)
		if from != nil {
			from[s.f.key] = s.src
		}
	}
}

// profile returns the deployment profile named in p, if any.
func (p patch) profile() (Profile, bool) {
	for _, s := range slices.Backward(p) {
		if s.f.key == profileKey {
			return s.v.(Profile), true
		}
	}
	return "", false
}

// Set sets the field named by its snake_case key from a string, as given in an
// environment variable or on the command line. Integers are base 10; booleans
// are true/false/1/0/yes/no (any case); modality accepts "", "null" and "auto"
// for auto-detect; target accepts "", "null" and "none" for no target. Set does not validate ranges; call Validate.
// An unknown key yields *UnknownKeyError, a malformed value *ParseError.
func (c *DiffusionQuantConfig) Set(key, value string) error {
	s, err := parseSetting(key, value, "")
	if err != nil {
		return err
	}
	s.f.set(c, s.v)
	return nil
}

func parseSetting(key, value, source string) (setting, error) {
	f := lookupField(key)
	if f == nil {
		return setting{}, &UnknownKeyError{Key: key, Source: source}
	}
	v, err := parseString(f.kind, value)
	if err != nil {
		return setting{}, &ParseError{Key: key, Value: value, Source: source, Err: err}
	}
	return setting{f, v, source}, nil
}

// ApplyEnv sets fields from the variables listed by EnvVars, read through
// lookup (e.g. os.LookupEnv). Unset or empty variables are ignored; a
// malformed value yields *EnvError and leaves c unchanged. It sets
// DeploymentProfile without re-basing on that profile's presets; Resolve does
// the re-basing.
func (c *DiffusionQuantConfig) ApplyEnv(lookup func(string) (string, bool)) error {
	p, err := envPatch(lookup)
	if err != nil {
		return err
	}
	p.apply(c, false, nil)
	return nil
}

func envPatch(lookup func(string) (string, bool)) (patch, error) {
	var p patch
	for _, key := range envOrder {
		f := lookupField(key)
		val, ok := lookup(f.env)
		if !ok || strings.TrimSpace(val) == "" {
			continue
		}
		v, err := parseString(f.kind, val)
		if err != nil {
			return nil, &EnvError{Var: f.env, Value: val, Err: err}
		}
		p = append(p, setting{f, v, f.env})
	}
	return p, nil
}

// ApplyMap sets fields from a decoded JSON object such as
// {"bit_width": 2, "modality": null}. Numbers may be float64 or json.Number;
// integer fields reject fractional values. Keys are applied in sorted order.
// An unknown key yields *UnknownKeyError, a value of the wrong type
// *ParseError; on error c is unchanged. "deployment_profile" only sets the
// field (no re-basing on its presets).
func (c *DiffusionQuantConfig) ApplyMap(m map[string]any) error {
	next := *c
	for _, key := range slices.Sorted(maps.Keys(m)) {
		f := lookupField(key)
		if f == nil {
			return &UnknownKeyError{Key: key}
		}
		v, err := parseJSON(f.kind, m[key])
		if err != nil {
			return &ParseError{Key: key, Value: jsonString(m[key]), Err: err}
		}
		f.set(&next, v)
	}
	*c = next
	return nil
}

var (
	errInt      = errors.New("expected a base-10 integer")
	errIntRange = errors.New("integer out of range")
	errFloat    = errors.New("expected a number")
	errBool     = errors.New("expected true, false, 1, 0, yes or no")
)

func parseString(k valueKind, s string) (any, error) {
	s = strings.TrimSpace(s)
	switch k {
	case kindInt:
		return parseInt(s)
	case kindFloat:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, errFloat
		}
		return f, nil
	case kindBool:
		return parseBool(s)
	case kindModality:
		return ParseModality(s)
	case kindProfile:
		return ParseProfile(s)
	case kindTarget:
		return ParseTarget(s)
	}
	panic("config: unhandled value kind")
}

func parseInt(s string) (any, error) {
	i, err := strconv.ParseInt(s, 10, 0)
	if errors.Is(err, strconv.ErrRange) {
		return nil, errIntRange
	}
	if err != nil {
		return nil, errInt
	}
	return int(i), nil
}

func parseBool(s string) (any, error) {
	switch strings.ToLower(s) {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return nil, errBool
}

// intLimit is 2^(bits of int - 1): floats in [-intLimit, intLimit) fit in an int.
var intLimit = math.Ldexp(1, strconv.IntSize-1)

func parseJSON(k valueKind, v any) (any, error) {
	switch k {
	case kindInt:
		switch v := v.(type) {
		case int:
			return v, nil
		case int64:
			if int64(int(v)) != v {
				return nil, errIntRange
			}
			return int(v), nil
		case json.Number:
			if i, err := strconv.ParseInt(v.String(), 10, 0); err == nil {
				return int(i), nil
			}
			f, err := v.Float64()
			if err != nil {
				return nil, errors.New("expected an integer")
			}
			return floatToInt(f)
		case float64:
			return floatToInt(v)
		}
		return nil, fmt.Errorf("expected an integer, got %s", jsonType(v))
	case kindFloat:
		switch v := v.(type) {
		case float64:
			return v, nil
		case json.Number:
			f, err := v.Float64()
			if err != nil {
				return nil, errFloat
			}
			return f, nil
		case int:
			return float64(v), nil
		case int64:
			return float64(v), nil
		}
		return nil, fmt.Errorf("expected a number, got %s", jsonType(v))
	case kindBool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("expected a boolean, got %s", jsonType(v))
	case kindModality:
		switch v := v.(type) {
		case nil:
			return ModalityAuto, nil
		case string:
			return ParseModality(v)
		}
		return nil, fmt.Errorf("expected a string or null, got %s", jsonType(v))
	case kindProfile:
		if s, ok := v.(string); ok {
			return ParseProfile(s)
		}
		return nil, fmt.Errorf("expected a string, got %s", jsonType(v))
	case kindTarget:
		switch v := v.(type) {
		case nil:
			return TargetNone, nil
		case string:
			return ParseTarget(v)
		}
		return nil, fmt.Errorf("expected a string or null, got %s", jsonType(v))
	}
	panic("config: unhandled value kind")
}

func floatToInt(f float64) (any, error) {
	if f != math.Trunc(f) || math.IsInf(f, 0) {
		return nil, errors.New("expected an integer")
	}
	if f < -intLimit || f >= intLimit {
		return nil, errIntRange
	}
	return int(f), nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64, json.Number, int, int64:
		return "a number"
	case string:
		return "a string"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

func jsonString(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	if b, err := json.Marshal(v); err == nil {
		return string(b)
	}
	return fmt.Sprint(v)
}
