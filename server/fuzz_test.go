package server

import (
	"testing"
)

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=10-", "bytes=-5", "bytes=1-2,3-4", "bytes=99999999999999999999-", "items=1-2"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return
		}
		start, end, ok := parseRange(h, size)
		if ok && (start < 0 || end < start || end >= size) {
			t.Fatalf("parseRange(%q, %d) = %d-%d: out of bounds", h, size, start, end)
		}
	})
}

func FuzzOCIPath(f *testing.F) {
	for _, s := range []string{"/v2/a/b/manifests/latest", "/v2/a/blobs/sha256:00", "/v2/x/tags/list", "/v2/../manifests/x", "/v2/a/referrers/sha256:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, kind, _, ok := ociPath(p)
		if ok && kind == "" {
			t.Fatalf("ociPath(%q) ok without a kind (name %q)", p, name)
		}
	})
}

func TestParseRange(t *testing.T) {
	cases := []struct {
		h          string
		size       int64
		start, end int64
		ok         bool
	}{
		{"bytes=0-0", 10, 0, 0, true},
		{"bytes=0-", 10, 0, 9, true},
		{"bytes=-3", 10, 7, 9, true},
		{"bytes=-30", 10, 0, 9, true},
		{"bytes=5-100", 10, 5, 9, true},
		{"bytes=10-", 10, 0, 0, false},
		{"bytes=-0", 10, 0, 0, false},
		{"bytes=3-2", 10, 0, 0, false},
		{"bytes= 1-2", 10, 1, 2, true},
		{"bytes=1-2,4-5", 10, 0, 0, false},
		{"bytes=+1-2", 10, 0, 0, false},
		{"bytes=0-0", 0, 0, 0, false},
		{"bytes=4294967296-4294967300", 5 << 30, 4294967296, 4294967300, true},
	}
	for _, c := range cases {
		s, e, ok := parseRange(c.h, c.size)
		if ok != c.ok || (ok && (s != c.start || e != c.end)) {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v; want %d, %d, %v", c.h, c.size, s, e, ok, c.start, c.end, c.ok)
		}
	}
}
