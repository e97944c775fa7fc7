// Package config holds the DiffusionQuantConfig parameters, the edge/local/cloud
// deployment profiles, and their resolution from YAML files, ARROW_QUANT_*
// environment variables and explicit overrides, as described in the
// configuration guide.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Profile is a deployment profile that supplies default values for every parameter.
type Profile string

// The deployment profiles.
const (
	Edge  Profile = "edge"
	Local Profile = "local"
	Cloud Profile = "cloud"
)

// Profiles returns the deployment profiles: edge, local, cloud.
func Profiles() []Profile { return []Profile{Edge, Local, Cloud} }

// ParseProfile parses a profile name, ignoring case and surrounding space.
// An unknown name yields *UnknownProfileError.
func ParseProfile(s string) (Profile, error) {
	p := Profile(strings.ToLower(strings.TrimSpace(s)))
	switch p {
	case Edge, Local, Cloud:
		return p, nil
	}
	return "", &UnknownProfileError{Value: s}
}

// Model modalities. The empty string means auto-detect (null in YAML/JSON).
const (
	ModalityAuto  = ""
	ModalityText  = "text"
	ModalityCode  = "code"
	ModalityImage = "image"
	ModalityAudio = "audio"
)

// Modalities returns the explicit modalities: text, code, image, audio.
func Modalities() []string {
	return []string{ModalityText, ModalityCode, ModalityImage, ModalityAudio}
}

// ParseModality parses a modality, ignoring case and surrounding space.
// "", "null" and "auto" mean auto-detect and yield "". An unknown name
// yields *UnknownModalityError.
func ParseModality(s string) (string, error) {
	m := strings.ToLower(strings.TrimSpace(s))
	switch m {
	case "", "null", "auto":
		return ModalityAuto, nil
	case ModalityText, ModalityCode, ModalityImage, ModalityAudio:
		return m, nil
	}
	return "", &UnknownModalityError{Value: s}
}

// Export targets. The empty string means none: the artifact is for
// ArrowQuant readers and every choice serves quality per bit.
const (
	TargetNone = ""
	// TargetGGUF makes every choice exact in GGUF from the start (see
	// docs/GGUF.md): dq super-blocks for INT2/INT4 where rows divide 256,
	// else INT4 group-32 groups; the q8_0 method for INT8; channel
	// equalization only for pairs that fold into a norm; 16 bits where rows
	// do not divide 32.
	TargetGGUF = "gguf"
)

// ParseTarget parses an export target, ignoring case and surrounding
// space: "gguf", or "", "null" and "none" for none. An unknown name yields
// *UnknownTargetError.
func ParseTarget(s string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	switch t {
	case "", "null", "none":
		return TargetNone, nil
	case TargetGGUF:
		return t, nil
	}
	return "", &UnknownTargetError{Value: s}
}

// DiffusionQuantConfig holds the quantization parameters for diffusion models.
type DiffusionQuantConfig struct {
	BitWidth           int     `yaml:"bit_width" json:"bit_width"`
	Modality           string  `yaml:"modality" json:"modality"` // "" = auto-detect
	NumTimeGroups      int     `yaml:"num_time_groups" json:"num_time_groups"`
	EnableTimeAware    bool    `yaml:"enable_time_aware" json:"enable_time_aware"`
	GroupSize          int     `yaml:"group_size" json:"group_size"`
	EnableSpatial      bool    `yaml:"enable_spatial" json:"enable_spatial"`
	MinAccuracy        float64 `yaml:"min_accuracy" json:"min_accuracy"`
	CalibrationSamples int     `yaml:"calibration_samples" json:"calibration_samples"`
	DeploymentProfile  Profile `yaml:"deployment_profile" json:"deployment_profile"`
	FailFast           bool    `yaml:"fail_fast" json:"fail_fast"`
	NumThreads         int     `yaml:"num_threads" json:"num_threads"` // 0 = all cores
	EnableStreaming    bool    `yaml:"enable_streaming" json:"enable_streaming"`
	Target             string  `yaml:"target" json:"target"` // "" = none, or "gguf"
}

// Default returns the local profile presets.
func Default() DiffusionQuantConfig { return FromProfile(Local) }

// FromProfile returns the presets of profile p. For an unknown p it returns
// the local presets with DeploymentProfile left as p, so Validate reports
// InvalidProfile.
func FromProfile(p Profile) DiffusionQuantConfig {
	c := DiffusionQuantConfig{
		BitWidth:           4,
		NumTimeGroups:      10,
		EnableTimeAware:    true,
		GroupSize:          128,
		EnableSpatial:      true,
		MinAccuracy:        0.85,
		CalibrationSamples: 128,
		DeploymentProfile:  p,
	}
	switch p {
	case Edge:
		c.BitWidth = 2
		c.NumTimeGroups = 5
		c.GroupSize = 256
		c.EnableSpatial = false
		c.MinAccuracy = 0.65
		c.CalibrationSamples = 32
		c.EnableStreaming = true
	case Cloud:
		c.BitWidth = 8
		c.NumTimeGroups = 20
		c.GroupSize = 64
		c.MinAccuracy = 0.95
		c.CalibrationSamples = 512
	}
	return c
}

// Validate checks every rule in field order and returns the first failure as
// a *ValidationError. Modality and DeploymentProfile must be in canonical
// (lower-case) form.
func (c DiffusionQuantConfig) Validate() error {
	switch c.BitWidth {
	case 2, 4, 8:
	default:
		return &ValidationError{Kind: InvalidBitWidth, Field: "bit_width", Value: c.BitWidth}
	}
	switch c.Modality {
	case ModalityAuto, ModalityText, ModalityCode, ModalityImage, ModalityAudio:
	default:
		return &ValidationError{Kind: InvalidModality, Field: "modality", Value: c.Modality}
	}
	if c.NumTimeGroups < 1 || c.NumTimeGroups > 100 {
		return &ValidationError{Kind: InvalidTimeGroups, Field: "num_time_groups", Value: c.NumTimeGroups}
	}
	switch c.GroupSize {
	case 32, 64, 128, 256:
	default:
		return &ValidationError{Kind: InvalidGroupSize, Field: "group_size", Value: c.GroupSize}
	}
	// Written so that NaN fails.
	if !(c.MinAccuracy >= 0 && c.MinAccuracy <= 1) {
		return &ValidationError{Kind: InvalidAccuracy, Field: "min_accuracy", Value: c.MinAccuracy}
	}
	if c.CalibrationSamples < 1 {
		return &ValidationError{Kind: InvalidCalibrationSamples, Field: "calibration_samples", Value: c.CalibrationSamples}
	}
	switch c.DeploymentProfile {
	case Edge, Local, Cloud:
	default:
		return &ValidationError{Kind: InvalidProfile, Field: "deployment_profile", Value: string(c.DeploymentProfile)}
	}
	if c.NumThreads < 0 {
		return &ValidationError{Kind: InvalidNumThreads, Field: "num_threads", Value: c.NumThreads}
	}
	switch c.Target {
	case TargetNone, TargetGGUF:
	default:
		return &ValidationError{Kind: InvalidTarget, Field: "target", Value: c.Target}
	}
	return nil
}

// MarshalJSON encodes c as a JSON object with snake_case keys in field
// order; an empty Modality or Target is encoded as null.
func (c DiffusionQuantConfig) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		v := f.get(&c)
		if f.key == "modality" && c.Modality == ModalityAuto || f.key == "target" && c.Target == TargetNone {
			v = nil
		}
		enc, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("config: encode %s: %w", f.key, err)
		}
		b.WriteString(strconv.Quote(f.key))
		b.WriteByte(':')
		b.Write(enc)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
