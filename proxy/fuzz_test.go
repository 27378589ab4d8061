package proxy

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/upstream"
	hf "github.com/clowder-dev/clowder/upstream/huggingface"
)

const fuzzRoot = "/srv/clowder-root"

// under reports whether p is root itself or inside it.
func under(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// An accepted repository name never climbs out of a directory it is joined
// to (hosted repositories live at .clowder/hosted/<name>), and is already
// clean: no "..", no empty segment, no leading or trailing slash, no NUL.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"library/alpine", "a/b/c", "..", "a/../b", "a//b", "/etc/passwd", "a/", "A/b", "a\x00b", "a/.b", "a__b/c-d.e", strings.Repeat("a/", 2100) + "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidName(s) {
			return
		}
		p := filepath.Join(fuzzRoot, filepath.FromSlash(s))
		if !under(fuzzRoot, p) || p != fuzzRoot+"/"+s || strings.ContainsAny(s, "\x00\\") {
			t.Fatalf("ValidName accepted %q, which joins to %q", s, p)
		}
		for _, seg := range strings.Split(s, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("ValidName accepted %q with segment %q", s, seg)
			}
		}
	})
}

// An accepted tag is one path segment (never "..") and never looks like a
// digest.
func FuzzValidTag(f *testing.F) {
	for _, s := range []string{"latest", "v1.2.3", "..", ".", "a/b", "sha256:abc", "-x", strings.Repeat("a", 129), "refs--pr--1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidTag(s) {
			return
		}
		if s == "." || s == ".." || strings.ContainsAny(s, "/\\:\x00@") || len(s) > 128 || IsDigest(s) {
			t.Fatalf("ValidTag accepted %q", s)
		}
		if filepath.Dir(filepath.Join(fuzzRoot, s)) != fuzzRoot {
			t.Fatalf("tag %q is not one path segment", s)
		}
	})
}

// A revision maps to a valid tag or to none; revisions without "-" map back.
func FuzzRevisionTag(f *testing.F) {
	for _, s := range []string{"main", "refs/pr/1", strings.Repeat("a", 40), "../x", "a--b", "v1.0", "refs/convert/parquet", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rev string) {
		tag := RevisionTag(rev)
		if tag == "" {
			return
		}
		if !ValidTag(tag) {
			t.Fatalf("RevisionTag(%q) = %q, not a valid tag", rev, tag)
		}
		if !strings.Contains(rev, "-") && TagRevision(tag) != rev {
			t.Fatalf("TagRevision(RevisionTag(%q)) = %q", rev, TagRevision(tag))
		}
	})
}

// An OCI path under the hub upstream maps to a repo id of one or two
// segments of the valid name it came from.
func FuzzRepoFromOCI(f *testing.F) {
	for _, s := range []string{"org/repo", "datasets/org/set", "spaces/a/b", "datasets/datasets/x", "a/b/c", "", "datasets/", "../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, ok := RepoFromOCI(p)
		if !ok {
			return
		}
		if r.ID == "" || strings.Count(r.ID, "/") > 1 || (r.Type != hf.Model && r.Type != hf.Dataset && r.Type != hf.Space) {
			t.Fatalf("RepoFromOCI(%q) = %+v", p, r)
		}
		if ValidName(p) && !ValidName(r.ID) {
			t.Fatalf("RepoFromOCI(%q) = id %q, not a valid name", p, r.ID)
		}
	})
}

// SanitizeHubJSON returns valid JSON with no xet* key at any depth, or an
// error; nothing nested past upstream.MaxJSONDepth gets through.
func FuzzSanitizeHubJSON(f *testing.F) {
	f.Add([]byte(`{"id":"org/m","sha":"abc","xetEnabled":true,"siblings":[{"rfilename":"a.gguf","xetHash":"1"}]}`))
	f.Add([]byte(`[{"type":"file","path":"a","lfs":{"oid":"x","xetHash":"y"}}]`))
	f.Add([]byte(strings.Repeat("[", 65) + strings.Repeat("]", 65)))
	f.Add([]byte(`{"a":1e999}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := SanitizeHubJSON(b)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("SanitizeHubJSON(%q) = %q, not JSON", b, out)
		}
		if upstream.CheckJSONDepth(b, upstream.MaxJSONDepth) != nil {
			t.Fatalf("SanitizeHubJSON accepted a document nested past %d", upstream.MaxJSONDepth)
		}
		var v any
		_ = json.Unmarshal(out, &v)
		if k, ok := testutil.XetKey(v); ok {
			t.Fatalf("SanitizeHubJSON(%q) kept %q", b, k)
		}
	})
}

// A hub tree listing (hostile JSON) yields only file paths that stay inside
// a checkout directory; the views built from it answer tree and paths-info
// without panicking, for any directory or path asked.
func FuzzHubTree(f *testing.F) {
	f.Add([]byte(`[{"type":"file","oid":"a","size":3,"path":"config.json"},{"type":"file","path":"m.gguf","size":9,"lfs":{"oid":"`+strings.Repeat("a", 64)+`","size":9}}]`), "", "config.json")
	f.Add([]byte(`[{"type":"file","path":"../../etc/passwd"},{"type":"file","path":"/abs"},{"type":"file","path":"a/./b"},{"type":"file","path":"a\\..\\b"}]`), "a", "../x")
	f.Add([]byte(`[{"type":"directory","path":"d"},{"type":"file","path":"d/e/f"}]`), "d", "d/e")
	f.Fuzz(func(t *testing.T, b []byte, dir, p string) {
		if upstream.CheckJSONDepth(b, upstream.MaxJSONDepth) != nil {
			return
		}
		var entries []hf.TreeEntry
		if json.Unmarshal(b, &entries) != nil {
			return
		}
		v := &HFView{}
		for _, e := range entries {
			if e.Type != "file" || !safeRepoPath(e.Path) {
				continue
			}
			target := filepath.Join(fuzzRoot, filepath.FromSlash(e.Path))
			if !under(fuzzRoot, target) || target == fuzzRoot {
				t.Fatalf("tree path %q accepted, lands at %q", e.Path, target)
			}
			v.Files = append(v.Files, HFFile{Path: e.Path, Size: e.Size, OID: e.OID})
		}
		sort.Slice(v.Files, func(i, j int) bool { return v.Files[i].Path < v.Files[j].Path })
		_ = TreeFromView(v, dir, true)
		_ = TreeFromView(v, dir, false)
		_ = PathsInfoFromView(v, []string{p, dir})
		if f, ok := v.File(p); ok && f.Path != p {
			t.Fatalf("File(%q) = %q", p, f.Path)
		}
	})
}

// paginate returns a run of the sorted list after last, at most n long.
func FuzzPaginate(f *testing.F) {
	f.Add("a,b,c,d", 2, "b")
	f.Add("", -1, "")
	f.Add("x", 0, "zz")
	f.Fuzz(func(t *testing.T, list string, n int, last string) {
		all := strings.Split(list, ",")
		slices.Sort(all)
		out, more := paginate(all, n, last)
		if n >= 0 && len(out) > n {
			t.Fatalf("paginate(n=%d) returned %d", n, len(out))
		}
		for _, x := range out {
			if last != "" && x <= last {
				t.Fatalf("paginate(last=%q) returned %q", last, x)
			}
		}
		if more && n < 0 {
			t.Fatal("more without n")
		}
	})
}
