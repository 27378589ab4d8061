package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// Every config key is documented in the README's configuration table: a
// key is found as `key`, `parent.key`, `parent[].key`, or under a
// documented `parent.*`.
func TestREADMEDocumentsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(readme)
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			full := prefix + key
			if !isSection(f.Type) && !documented(doc, full) {
				t.Errorf("config key %s is not in README.md", full)
			}
			sep := "."
			if k := f.Type.Kind(); k == reflect.Slice {
				sep = "[]."
			}
			walk(full+sep, f.Type)
		}
	}
	walk("", reflect.TypeOf(Config{}))
}

// isSection reports whether t holds keys of its own (a struct, or a list
// of them): its leaves are what the table documents.
func isSection(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && t.NumField() > 0 && t.Field(0).Tag.Get("yaml") != ""
}

func documented(doc, key string) bool {
	if strings.Contains(doc, "`"+key+"`") {
		return true
	}
	// A parent documented as a whole: `auth.*`.
	for p := key; ; {
		i := strings.LastIndexAny(p, ".")
		if i < 0 {
			return false
		}
		p = strings.TrimSuffix(p[:i], "[]")
		if strings.Contains(doc, "`"+p+".*`") {
			return true
		}
	}
}
