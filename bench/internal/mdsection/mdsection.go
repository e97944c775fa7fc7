// Package mdsection replaces generated sections of markdown files: the
// text between
//
//	<!-- BEGIN generated: NAME -->
//	<!-- END generated: NAME -->
//
// belongs to the program that writes NAME; everything else is left as is.
package mdsection

import (
	"fmt"
	"os"
	"strings"
)

func markers(name string) (begin, end string) {
	return "<!-- BEGIN generated: " + name + " -->", "<!-- END generated: " + name + " -->"
}

// Extract returns section name of doc, markers included, and whether doc
// has it.
func Extract(doc, name string) (string, bool) {
	begin, end := markers(name)
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		return "", false
	}
	return doc[i : j+len(end)], true
}

// Wrap puts body between the markers of name. A body ending in a newline
// makes a block section; one without, an inline one (a sentence).
func Wrap(name, body string) string {
	begin, end := markers(name)
	if strings.HasSuffix(body, "\n") {
		return begin + "\n" + body + end
	}
	return begin + body + end
}

// Replace puts body into section name of doc, which must have it.
func Replace(doc, name, body string) (string, error) {
	old, ok := Extract(doc, name)
	if !ok {
		b, _ := markers(name)
		return "", fmt.Errorf("no section %q (a line %s)", name, b)
	}
	return strings.Replace(doc, old, Wrap(name, body), 1), nil
}

// ReplaceFile is Replace on a file, written in place.
func ReplaceFile(path, name, body string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc, err := Replace(string(b), name, body)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
