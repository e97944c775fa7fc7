package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrValidation matches, via errors.Is, every *ValidationError,
// *UnknownProfileError, *UnknownModalityError and *UnknownTargetError,
// also when wrapped.
var ErrValidation = errors.New("invalid configuration")

// Validation error kinds, as named in the configuration guide.
const (
	InvalidBitWidth           = "InvalidBitWidth"
	InvalidModality           = "InvalidModality"
	InvalidTimeGroups         = "InvalidTimeGroups"
	InvalidGroupSize          = "InvalidGroupSize"
	InvalidAccuracy           = "InvalidAccuracy"
	InvalidCalibrationSamples = "InvalidCalibrationSamples"
	InvalidProfile            = "InvalidProfile"
	InvalidNumThreads         = "InvalidNumThreads"
	InvalidTarget             = "InvalidTarget"
)

// Kinds returned by Kind for errors that are not validation errors.
const (
	KindUnknownKey = "UnknownKey"
	KindParseError = "ParseError"
	KindEnvError   = "EnvError"
)

var rules = map[string]string{
	InvalidBitWidth:           "bit_width must be 2, 4 or 8",
	InvalidModality:           "modality must be text, code, image, audio or null (auto-detect)",
	InvalidTimeGroups:         "num_time_groups must be between 1 and 100",
	InvalidGroupSize:          "group_size must be 32, 64, 128 or 256",
	InvalidAccuracy:           "min_accuracy must be between 0.0 and 1.0",
	InvalidCalibrationSamples: "calibration_samples must be at least 1",
	InvalidProfile:            "deployment_profile must be edge, local or cloud",
	InvalidNumThreads:         "num_threads must be 0 (all cores) or more",
	InvalidTarget:             "target must be gguf or null (no export target)",
}

// ValidationError reports a parameter value that breaks a validation rule.
// Its message starts with the guide's form, e.g. "InvalidBitWidth(3)".
type ValidationError struct {
	Kind  string // InvalidBitWidth, InvalidTimeGroups, ...
	Field string // snake_case key
	Value any
}

func (e *ValidationError) Error() string {
	msg := fmt.Sprintf("%s(%s)", e.Kind, formatValue(e.Value))
	if r := rules[e.Kind]; r != "" {
		return msg + ": " + r
	}
	return msg + ": invalid " + e.Field
}

// Is reports whether target is ErrValidation.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }

// UnknownProfileError reports an unknown deployment profile name.
type UnknownProfileError struct{ Value string }

func (e *UnknownProfileError) Error() string {
	return fmt.Sprintf("%s(%q): %s", InvalidProfile, e.Value, rules[InvalidProfile])
}

// Is reports whether target is ErrValidation.
func (e *UnknownProfileError) Is(target error) bool { return target == ErrValidation }

// UnknownModalityError reports an unknown modality name.
type UnknownModalityError struct{ Value string }

func (e *UnknownModalityError) Error() string {
	return fmt.Sprintf("%s(%q): %s", InvalidModality, e.Value, rules[InvalidModality])
}

// Is reports whether target is ErrValidation.
func (e *UnknownModalityError) Is(target error) bool { return target == ErrValidation }

// UnknownTargetError reports an unknown export target name.
type UnknownTargetError struct{ Value string }

func (e *UnknownTargetError) Error() string {
	return fmt.Sprintf("%s(%q): %s", InvalidTarget, e.Value, rules[InvalidTarget])
}

// Is reports whether target is ErrValidation.
func (e *UnknownTargetError) Is(target error) bool { return target == ErrValidation }

// UnknownKeyError reports a key that is not a configuration parameter.
type UnknownKeyError struct {
	Key    string
	Source string // file path, "override", or "" when unknown
	Line   int    // 1-based line in Source, 0 when unknown
}

func (e *UnknownKeyError) Error() string {
	return where(e.Source, e.Line) + fmt.Sprintf("unknown key %q (valid keys: %s)", e.Key, strings.Join(Keys(), ", "))
}

// ParseError reports a value that cannot be converted to its parameter's
// type. Key is empty for errors about a whole document (e.g. YAML syntax).
type ParseError struct {
	Key    string
	Value  string
	Source string // file path, "override", or "" when unknown
	Line   int    // 1-based line in Source, 0 when unknown
	Err    error
}

func (e *ParseError) Error() string {
	if e.Key == "" {
		return where(e.Source, e.Line) + e.Err.Error()
	}
	return where(e.Source, e.Line) + fmt.Sprintf("invalid value %q for %s: %v", e.Value, e.Key, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// EnvError reports a malformed ARROW_QUANT_* environment variable.
type EnvError struct {
	Var   string
	Value string
	Err   error
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("invalid environment variable %s=%q: %v", e.Var, e.Value, e.Err)
}

func (e *EnvError) Unwrap() error { return e.Err }

// Kind classifies err for callers that map errors to codes. It returns the
// validation kind (e.g. "InvalidBitWidth", also for unknown profile,
// modality or target names wherever they occur), else "EnvError", "UnknownKey" or
// "ParseError", else "".
func Kind(err error) string {
	var (
		ve *ValidationError
		pe *UnknownProfileError
		me *UnknownModalityError
		te *UnknownTargetError
		ee *EnvError
		ke *UnknownKeyError
		fe *ParseError
	)
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ve):
		return ve.Kind
	case errors.As(err, &pe):
		return InvalidProfile
	case errors.As(err, &me):
		return InvalidModality
	case errors.As(err, &te):
		return InvalidTarget
	case errors.As(err, &ee):
		return KindEnvError
	case errors.As(err, &ke):
		return KindUnknownKey
	case errors.As(err, &fe):
		return KindParseError
	}
	return ""
}

func where(source string, line int) string {
	var b strings.Builder
	if source != "" {
		b.WriteString(source + ": ")
	}
	if line > 0 {
		b.WriteString("line " + strconv.Itoa(line) + ": ")
	}
	return b.String()
}

func formatValue(v any) string {
	switch v := v.(type) {
	case int:
		return strconv.Itoa(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case string:
		return strconv.Quote(v)
	case Profile:
		return strconv.Quote(string(v))
	}
	return fmt.Sprint(v)
}
