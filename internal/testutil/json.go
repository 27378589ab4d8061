package testutil

import "strings"

// XetKey returns a key starting with "xet" (any case) at any depth of
// decoded JSON v, if there is one: what hub JSON must not carry once
// Clowder has stripped the Xet protocol from it.
func XetKey(v any) (string, bool) {
	switch y := v.(type) {
	case map[string]any:
		for k, e := range y {
			if strings.HasPrefix(strings.ToLower(k), "xet") {
				return k, true
			}
			if k, ok := XetKey(e); ok {
				return k, true
			}
		}
	case []any:
		for _, e := range y {
			if k, ok := XetKey(e); ok {
				return k, true
			}
		}
	}
	return "", false
}
