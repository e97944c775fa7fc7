package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Options lists the configuration sources for Resolve. Zero fields are absent.
type Options struct {
	Profile   string                      // CLI --profile; "" = not given
	YAMLPath  string                      // "" = no file
	Lookup    func(string) (string, bool) // environment, e.g. os.LookupEnv; nil = none
	Overrides map[string]string           // snake_case key -> value, as for Set
	// OverrideSource names where an override came from in errors (e.g.
	// the flag "--bit-width"); "override" when nil.
	OverrideSource func(key string) string
}

// Resolve builds a validated configuration with precedence
// profile presets < YAML file < ARROW_QUANT_* environment < Overrides.
//
// The base profile comes from the highest source naming one: Options.Profile,
// then Overrides["deployment_profile"], then ARROW_QUANT_DEPLOYMENT_PROFILE,
// then the YAML deployment_profile, else local. Its presets are overlaid with
// the YAML file's explicit keys, then the environment, then Overrides (in
// sorted key order). The result's DeploymentProfile is always the base profile.
//
// Every source is parsed before anything is applied, so a malformed value is
// reported even when a higher source overrides it.
func Resolve(o Options) (DiffusionQuantConfig, error) {
	var doc yamlDoc
	if o.YAMLPath != "" {
		var err error
		if doc, err = readYAML(o.YAMLPath); err != nil {
			return DiffusionQuantConfig{}, err
		}
	}
	return resolve(doc, o)
}

// resolve is Resolve with the YAML file already parsed (o.YAMLPath unused).
func resolve(doc yamlDoc, o Options) (DiffusionQuantConfig, error) {
	var env patch
	if o.Lookup != nil {
		var err error
		if env, err = envPatch(o.Lookup); err != nil {
			return DiffusionQuantConfig{}, err
		}
	}
	var over patch
	for _, key := range slices.Sorted(maps.Keys(o.Overrides)) {
		src := "override"
		if o.OverrideSource != nil {
			src = o.OverrideSource(key)
		}
		s, err := parseSetting(key, o.Overrides[key], src)
		if err != nil {
			return DiffusionQuantConfig{}, err
		}
		over = append(over, s)
	}

	base := Local
	if doc.hasProfile {
		base = doc.profile
	}
	if p, ok := env.profile(); ok {
		base = p
	}
	if p, ok := over.profile(); ok {
		base = p
	}
	if o.Profile != "" {
		p, err := ParseProfile(o.Profile)
		if err != nil {
			return DiffusionQuantConfig{}, &ParseError{Key: profileKey, Value: o.Profile, Source: "profile option", Err: err}
		}
		base = p
	}

	c := FromProfile(base)
	from := map[string]string{}
	doc.settings.apply(&c, true, from)
	env.apply(&c, true, from)
	over.apply(&c, true, from)
	if err := c.Validate(); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) && from[ve.Field] != "" {
			return DiffusionQuantConfig{}, &SourcedError{Err: err, Source: from[ve.Field]}
		}
		return DiffusionQuantConfig{}, err
	}
	return c, nil
}

// SourcedError is a validation error of a value that came from a file,
// a variable or a flag: the guide's message first, then where the value
// was set ("InvalidBitWidth(3): bit_width must be 2, 4 or 8 (set by
// ARROW_QUANT_BIT_WIDTH)").
type SourcedError struct {
	Err    error
	Source string
}

func (e *SourcedError) Error() string { return fmt.Sprintf("%v (set by %s)", e.Err, e.Source) }
func (e *SourcedError) Unwrap() error { return e.Err }

// LoadYAML loads a configuration file on top of the presets of its
// deployment_profile (local if absent) and validates the result. It is
// Resolve(Options{YAMLPath: path}).
func LoadYAML(path string) (DiffusionQuantConfig, error) {
	return Resolve(Options{YAMLPath: path})
}
