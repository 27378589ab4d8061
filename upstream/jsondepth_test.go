package upstream

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func depthOf(v any) int {
	switch x := v.(type) {
	case map[string]any:
		d := 0
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	case []any:
		d := 0
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	}
	return 0
}

func TestCheckJSONDepth(t *testing.T) {
	deep := strings.Repeat("[", 65) + strings.Repeat("]", 65)
	ok := strings.Repeat(`{"a":`, 64) + "1" + strings.Repeat("}", 64)
	cases := map[string]bool{
		deep:                  false,
		ok:                    true,
		`{"a":"[[[[[[[[[[["}`: true,
		`"\"[[[["`:            true,
		`{"manifests":[{"annotations":{"a":"b"}}]}`: true,
	}
	for in, want := range cases {
		err := CheckJSONDepth([]byte(in), 64)
		if (err == nil) != want || (err != nil && !errors.Is(err, ErrTooDeep)) {
			t.Errorf("CheckJSONDepth(%.40q) = %v, want ok %v", in, err, want)
		}
	}
}

// For valid JSON the check agrees with the decoded document's real depth.
func FuzzCheckJSONDepth(f *testing.F) {
	for _, s := range []string{`{}`, `[[[]]]`, `{"a":[{"b":"[["}]}`, `"\\"`, strings.Repeat("[", 70) + strings.Repeat("]", 70), `{"a\"[":1}`} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, b []byte, max int) {
		if max < 0 || max > 100 {
			return
		}
		err := CheckJSONDepth(b, max)
		var v any
		if json.Unmarshal(b, &v) != nil {
			return
		}
		if d := depthOf(v); (err == nil) != (d <= max) {
			t.Fatalf("CheckJSONDepth(%q, %d) = %v, real depth %d", b, max, err, d)
		}
	})
}
