package hosted

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/clowder-dev/clowder/cas"
)

func inside(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// Names, upload ids, digests and mount sources from requests reach the
// filesystem only as paths under the hosted and uploads folders, and no
// operation on them writes outside the root.
func FuzzHostedPaths(f *testing.F) {
	d := "sha256:" + strings.Repeat("a", 64)
	f.Add("local/team/model", strings.Repeat("0", 32), d, "local/other")
	f.Add("local/../../etc", "../../../etc/passwd", "sha256:../../x", "local/../..")
	f.Add("local/a/_blobs/sha256", "%2e%2e%2f", "sha512:"+strings.Repeat("b", 128), "")
	f.Add("/local/a", "0123456789abcdef0123456789abcdef/..", d, "/etc")
	f.Add("local\x00/a", "", "", "local")
	parent := f.TempDir()
	root := filepath.Join(parent, "root")
	l, err := cas.OpenLayout(root)
	if err != nil {
		f.Fatal(err)
	}
	h, err := Open(l, root, "local")
	if err != nil {
		f.Fatal(err)
	}
	sentinel := filepath.Join(parent, "sentinel")
	if err := os.WriteFile(sentinel, []byte("keep"), 0o644); err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, repo, id, dg, from string) {
		if h.checkRepo(repo) == nil {
			if p := h.repoDir(repo); !inside(h.dir, p) || p == h.dir {
				t.Fatalf("repo %q maps to %q, outside %q", repo, p, h.dir)
			}
			if cas.ValidateDigest(digest.Digest(dg)) == nil {
				if p := h.linkPath(repo, digest.Digest(dg)); !inside(h.repoDir(repo), p) {
					t.Fatalf("link of %q in %q maps to %q", dg, repo, p)
				}
			}
		}
		if uploadIDRE.MatchString(id) && !inside(h.uploads, filepath.Join(h.uploads, id)) {
			t.Fatalf("upload id %q leaves the uploads folder", id)
		}
		d := digest.Digest(dg)
		_, _ = h.UploadStatus(ctx, repo, id)
		_, _ = h.AppendUpload(ctx, repo, id, -1, 1, strings.NewReader("x"))
		_ = h.CancelUpload(ctx, repo, id)
		if b, err := h.OpenBlob(ctx, repo, d); err == nil {
			b.Close()
		}
		_, _ = h.Mount(ctx, repo, from, d)
		_ = h.DeleteBlob(ctx, repo, d)
		_, _ = h.GetManifest(ctx, repo, id)
		_, _ = h.Tags(ctx, repo)
		_, _ = h.Referrers(ctx, repo, d, from)
		var stray []string
		_ = filepath.WalkDir(parent, func(p string, e fs.DirEntry, err error) error {
			if err == nil && p != parent && p != sentinel && !inside(root, p) {
				stray = append(stray, p)
			}
			return nil
		})
		if b, err := os.ReadFile(sentinel); err != nil || string(b) != "keep" || len(stray) != 0 {
			t.Fatalf("files outside the root changed: %v (sentinel %q, %v)", stray, b, err)
		}
	})
}
