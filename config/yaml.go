package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"

	"github.com/arrowquant/arrowquant/internal/fsutil"
)

// yamlDoc is a parsed configuration file: its deployment_profile, if given,
// and its other explicit keys.
type yamlDoc struct {
	profile    Profile
	hasProfile bool
	settings   patch
}

// maxYAMLBytes bounds a configuration file (the example is 3 KB).
const maxYAMLBytes = 1 << 20

func readYAML(path string) (yamlDoc, error) {
	data, err := fsutil.ReadFileLimit(path, maxYAMLBytes)
	if err != nil {
		return yamlDoc{}, fmt.Errorf("config: %w", err)
	}
	return parseYAML(data, path)
}

// parseYAML parses a YAML mapping of parameter keys. source names the input
// in errors.
func parseYAML(data []byte, source string) (yamlDoc, error) {
	var doc yamlDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return doc, nil // empty file
		}
		return doc, &ParseError{Source: source, Err: err}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return doc, &ParseError{Source: source, Line: extra.Line, Err: errors.New("multiple YAML documents are not supported")}
	case !errors.Is(err, io.EOF):
		return doc, &ParseError{Source: source, Err: err}
	}

	n := &root
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return doc, nil
		}
		n = n.Content[0]
	}
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return doc, nil // e.g. a file holding only comments or "~"
	}
	if n.Kind != yaml.MappingNode {
		return doc, &ParseError{Source: source, Line: n.Line,
			Err: fmt.Errorf("expected a mapping of parameter keys to values, got %s", yamlType(n))}
	}

	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return doc, &ParseError{Source: source, Line: k.Line, Err: fmt.Errorf("expected a key, got %s", yamlType(k))}
		}
		f := lookupField(k.Value)
		if f == nil {
			return doc, &UnknownKeyError{Key: k.Value, Source: source, Line: k.Line}
		}
		if first, dup := seen[f.key]; dup {
			return doc, &ParseError{Key: f.key, Value: nodeString(v), Source: source, Line: k.Line,
				Err: fmt.Errorf("duplicate key (first set on line %d)", first)}
		}
		seen[f.key] = k.Line
		val, err := parseNode(f.kind, v)
		if err != nil {
			return doc, &ParseError{Key: f.key, Value: nodeString(v), Source: source, Line: v.Line, Err: err}
		}
		if f.key == profileKey {
			doc.profile, doc.hasProfile = val.(Profile), true
			continue
		}
		doc.settings = append(doc.settings, setting{f, val, fmt.Sprintf("%s:%d", source, v.Line)})
	}
	return doc, nil
}

// parseNode converts a YAML value, checking its YAML type: integers must be
// YAML integers, min_accuracy a YAML number, strings YAML strings (or null
// for modality and target). Booleans also accept unquoted yes/no/1/0.
func parseNode(k valueKind, n *yaml.Node) (any, error) {
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("expected %s, got %s", wantYAML[k], yamlType(n))
	}
	tag := n.ShortTag()
	quoted := n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0
	var ok bool
	switch k {
	case kindInt:
		ok = tag == "!!int"
	case kindFloat:
		ok = tag == "!!int" || tag == "!!float"
	case kindBool:
		ok = tag == "!!bool" || (!quoted && (tag == "!!str" || tag == "!!int"))
	case kindModality:
		if tag == "!!null" {
			return ModalityAuto, nil
		}
		ok = tag == "!!str"
	case kindProfile:
		ok = tag == "!!str"
	case kindTarget:
		if tag == "!!null" {
			return TargetNone, nil
		}
		ok = tag == "!!str"
	}
	if !ok {
		return nil, fmt.Errorf("expected %s, got %s", wantYAML[k], yamlType(n))
	}
	return parseString(k, n.Value)
}

var wantYAML = map[valueKind]string{
	kindInt:      "an integer",
	kindFloat:    "a number",
	kindBool:     "a boolean",
	kindModality: "a string or null",
	kindProfile:  "a string",
	kindTarget:   "a string or null",
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func nodeString(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return "<" + yamlType(n) + ">"
}

func yamlType(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	}
	switch t := n.ShortTag(); t {
	case "!!str":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a float"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "null"
	default:
		return t
	}
}
