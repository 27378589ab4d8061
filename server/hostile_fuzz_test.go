package server

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clowder-dev/clowder/proxy"
)

func segmentsSafe(s string) bool {
	if s == "" || strings.ContainsAny(s, "\x00\\") || strings.HasPrefix(s, "/") {
		return false
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// Hugging Face request paths: whatever the escaping (%2e%2e, %2F, %00),
// an accepted repo id is one or two clean segments that stay inside any
// directory they are joined to, and no segment holds a NUL.
func FuzzHFPath(f *testing.F) {
	for _, s := range []string{"/api/models/org/repo/revision/main", "/api/datasets/org/set/tree/refs%2Fpr%2F1/dir", "/api/models/%2e%2e/%2e%2e/revision/x",
		"/org/repo/resolve/main/a/b.gguf", "/datasets/org/set/resolve/v1/..%2F..%2Fetc", "/api/models/a%00b/revision/x", "/api/spaces/-x/tree/main", "/%2Fetc/resolve/main/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		segs, ok := splitEscaped(p)
		if !ok {
			return
		}
		for _, s := range segs {
			if strings.ContainsRune(s, 0) {
				t.Fatalf("splitEscaped(%q) kept a NUL in %q", p, s)
			}
		}
		for _, kw := range [][]string{{"revision", "tree", "paths-info"}, {"resolve"}} {
			id, _, _, found := repoAt(segs, kw...)
			if !found || !validRepoID(id) {
				continue
			}
			if !segmentsSafe(id) || strings.Count(id, "/") > 1 {
				t.Fatalf("repo id %q accepted from %q", id, p)
			}
			root := "/srv/root"
			if j := filepath.Join(root, id); !strings.HasPrefix(j, root+"/") {
				t.Fatalf("repo id %q joins to %q", id, j)
			}
		}
	})
}

// Hosted and proxied OCI paths: a name the handlers accept is clean, and
// an upload session id is one segment.
func FuzzHostedPath(f *testing.F) {
	for _, s := range []string{"/v2/local/a/blobs/uploads/", "/v2/local/a/blobs/uploads/0123", "/v2/local/../../x/blobs/uploads/..", "/v2/local/a/manifests/v1", "/v2//blobs/uploads/x", "/v2/local/a/blobs/uploads/a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, kind, ref, ok := hostedPath(p)
		if !ok {
			return
		}
		if kind == "uploads" && strings.Contains(ref, "/") {
			t.Fatalf("hostedPath(%q) = upload id %q spans segments", p, ref)
		}
		if proxy.ValidName(name) && !segmentsSafe(name) {
			t.Fatalf("hostedPath(%q) = name %q accepted but unsafe", p, name)
		}
		if kind != "uploads" && kind != "tags" && strings.Contains(ref, "/") {
			t.Fatalf("hostedPath(%q) = ref %q spans segments", p, ref)
		}
	})
}

// tags/list and _catalog pagination: n is refused (400) or within
// [-1, 1000], and a page holds at most n entries, all after last.
func FuzzPageParams(f *testing.F) {
	for _, q := range []string{"n=10", "n=-1", "n=99999999999999999999", "n=", "n=1&last=b", "last=..%2F..", "n=0", "n=1e3", "n=%00"} {
		f.Add(q)
	}
	all := []string{"a", "b", "c", "d", "e"}
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest(http.MethodGet, "/v2/_catalog", nil)
		r.URL.RawQuery = q
		w := httptest.NewRecorder()
		n, last, ok := pageParams(w, r)
		if !ok {
			if w.Code != http.StatusBadRequest {
				t.Fatalf("pageParams(%q) refused with %d", q, w.Code)
			}
			return
		}
		if n < -1 || n > maxTagsPage {
			t.Fatalf("pageParams(%q) = n %d", q, n)
		}
		out := page(w, slices.Clone(all), n, last, "/v2/_catalog")
		if n >= 0 && len(out) > n {
			t.Fatalf("page(n=%d) = %d entries", n, len(out))
		}
		for _, x := range out {
			if last != "" && x <= last {
				t.Fatalf("page(last=%q) = %q", last, x)
			}
		}
		if l := w.Header().Get("Link"); l != "" {
			u, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(l, ";", 2)[0], "<"), ">"))
			if err != nil || u.Host != "" || u.Path != "/v2/_catalog" {
				t.Fatalf("page Link %q leaves the endpoint", l)
			}
		}
	})
}
