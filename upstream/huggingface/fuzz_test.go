package huggingface

import (
	"encoding/json"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// escapePath keeps a file path's slashes and nothing else of URL syntax: the
// escaped path unescapes to the file path and cannot carry a query or
// fragment into the hub URL.
func FuzzEscapePath(f *testing.F) {
	for _, s := range []string{"model.safetensors", "dir/sub file.txt", "a?b#c", "%2e%2e/x", "100%", "a//b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		e := escapePath(p)
		if strings.ContainsAny(e, "?#") {
			t.Fatalf("escapePath(%q) = %q keeps ? or #", p, e)
		}
		if strings.Count(e, "/") != strings.Count(p, "/") {
			t.Fatalf("escapePath(%q) = %q changes the segments", p, e)
		}
		if u, err := url.PathUnescape(e); err != nil || u != p {
			t.Fatalf("escapePath(%q) = %q unescapes to %q, %v", p, e, u, err)
		}
	})
}

// LinkNext returns the URL inside the first <...> of a rel="next" part.
func FuzzLinkNext(f *testing.F) {
	for _, s := range []string{`<https://huggingface.co/api/models/x/tree/main?cursor=a>; rel="next"`, `<a>; rel=next, <b>; rel="prev"`, `<`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		if n := LinkNext(h); strings.Contains(n, ">") {
			t.Fatalf("LinkNext(%q) = %q", h, n)
		}
	})
}

// StripXet removes every xet* key at any depth of decoded hub JSON.
func FuzzStripXet(f *testing.F) {
	f.Add([]byte(`{"xetEnabled":true,"siblings":[{"rfilename":"a","xetHash":"x"}],"XET":{"xetA":1}}`))
	f.Add([]byte(`[{"lfs":{"xetHash":"1"}},[{"xet":2}]]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var v any
		if json.Unmarshal(b, &v) != nil {
			return
		}
		if k, ok := testutil.XetKey(StripXet(v)); ok {
			t.Fatalf("StripXet(%s) kept key %q", b, k)
		}
	})
}

// A hub URL built from an accepted revision and file path keeps its shape:
// path.Clean (what a server or proxy before the hub may apply) changes
// nothing, so the request cannot land on another endpoint.
func FuzzValidRevisionPath(f *testing.F) {
	for _, s := range []string{"main", "refs/pr/1", "..", "a/../b", "./x", "a//b", "v1.0", "x\x00", "%2e%2e"} {
		f.Add(s, s)
	}
	f.Add("main", "dir/model.safetensors")
	f.Fuzz(func(t *testing.T, rev, p string) {
		if ValidRevision(rev) {
			u := "/api/models/org/repo/tree/" + url.PathEscape(rev)
			if path.Clean(u) != u {
				t.Fatalf("revision %q gives %q, which cleans to %q", rev, u, path.Clean(u))
			}
		}
		if ValidPath(p) {
			u := "/org/repo/resolve/main/" + escapePath(p)
			if path.Clean(u) != u || strings.ContainsAny(u, "?#") {
				t.Fatalf("path %q gives %q, which cleans to %q", p, u, path.Clean(u))
			}
		}
	})
}
