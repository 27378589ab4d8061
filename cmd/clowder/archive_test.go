package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// export -> import into an empty root -> push to another registry: the same
// digests all the way; a damaged archive is refused whole.
func TestExportImportPush(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	idx := testutil.PushIndex(t, reg.DirectHost, "lib/multi", "1")
	img := testutil.PushImage(t, reg.DirectHost, "lib/single", "2", 2, 4096)
	idxDigest, _ := idx.Digest()
	imgDigest, _ := img.Digest()
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: reg, url: 'http://%s'}\n", reg.Host))
	rootA, rootB := t.TempDir(), t.TempDir()
	for _, ref := range []string{"reg/lib/multi:1", "reg/lib/single:2"} {
		if out, err := run(t, "pull", "--config", cfg, "--root", rootA, ref); err != nil {
			t.Fatalf("pull %s: %v\n%s", ref, err, out)
		}
	}
	tarPath := filepath.Join(t.TempDir(), "seed.tar")
	if out, err := run(t, "export", "--config", cfg, "--root", rootA, "reg/lib/multi:1", "reg/lib/single:2", "-o", tarPath); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	out, err := run(t, "import", "--config", cfg, "--root", rootB, tarPath)
	if err != nil || !strings.Contains(out, "imported reg/lib/multi:1") || !strings.Contains(out, "imported reg/lib/single:2") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if out, err := run(t, "verify", "--config", cfg, "--root", rootB); err != nil {
		t.Fatalf("verify after import: %v\n%s", err, out)
	}
	// Push both from the imported root to a second registry.
	dst := testutil.NewRegistry(t, testutil.RegistryOptions{})
	for _, c := range []struct{ name, to, want string }{
		{"reg/lib/multi:1", dst.Host + "/copy/multi:1", idxDigest.String()},
		{"reg/lib/single:2", dst.Host + "/copy/single:2", imgDigest.String()},
	} {
		if out, err := run(t, "push", "--config", cfg, "--root", rootB, "--insecure", c.name, c.to); err != nil {
			t.Fatalf("push %s: %v\n%s", c.name, err, out)
		}
		ref, _ := name.ParseReference(c.to, name.Insecure)
		desc, err := remote.Head(ref)
		if err != nil || desc.Digest.String() != c.want {
			t.Errorf("pushed %s = %v, %v; want %s", c.to, desc, err, c.want)
		}
	}

	// Flip a byte in one blob of the archive: the import is refused and
	// names nothing; no damaged blob is visible.
	raw, _ := os.ReadFile(tarPath)
	var buf bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(raw)), tar.NewWriter(&buf)
	damaged := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		b, _ := io.ReadAll(tr)
		if !damaged && strings.HasPrefix(h.Name, "blobs/sha256/") && len(b) > 100 {
			b[50] ^= 0xff
			damaged = true
		}
		tw.WriteHeader(h)
		tw.Write(b)
	}
	tw.Close()
	bad := filepath.Join(t.TempDir(), "bad.tar")
	os.WriteFile(bad, buf.Bytes(), 0o644)
	rootC := t.TempDir()
	out, err = run(t, "import", "--config", cfg, "--root", rootC, bad)
	if err == nil || !strings.Contains(out, "digest mismatch") {
		t.Errorf("import of a damaged archive = %v\n%s", err, out)
	}
	if idx, _ := os.ReadFile(filepath.Join(rootC, "index.json")); strings.Contains(string(idx), "reg/lib") {
		t.Errorf("damaged import named content: %s", idx)
	}
	if out, err := run(t, "verify", "--config", cfg, "--root", rootC); err != nil {
		t.Errorf("verify after refused import: %v\n%s", err, out)
	}
	// An incomplete name cannot be exported.
	rootD := t.TempDir()
	if out, err := run(t, "pull", "--config", cfg, "--root", rootD, "--platform", "linux/amd64", "reg/lib/multi:1"); err != nil {
		t.Fatalf("pull one platform: %v\n%s", err, out)
	}
	if out, err := run(t, "export", "--config", cfg, "--root", rootD, "reg/lib/multi:1", "-o", filepath.Join(t.TempDir(), "x.tar")); err == nil || !strings.Contains(out, "not fully cached") {
		t.Errorf("export of a partly cached index = %v\n%s", err, out)
	}
}
