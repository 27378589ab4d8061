package cas

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func FuzzValidateDigest(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("b", 128), "md5:00", "sha256:../../x", "", ":"} {
		f.Add(s)
	}
	l := &Layout{root: "/root-of-layout"}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateDigest(digest.Digest(s)) != nil {
			return
		}
		p, err := l.BlobPath(digest.Digest(s))
		if err != nil {
			t.Fatalf("BlobPath(%q) = %v after ValidateDigest accepted it", s, err)
		}
		if rel, err := filepath.Rel("/root-of-layout/blobs", p); err != nil || strings.HasPrefix(rel, "..") || filepath.Clean(p) != p {
			t.Fatalf("BlobPath(%q) = %q escapes blobs/", s, p)
		}
	})
}
