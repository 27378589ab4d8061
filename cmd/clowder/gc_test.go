package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clowder-dev/clowder/internal/testutil"
)

func TestRmAndGC(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, reg.DirectHost, "a", "1", 2, 2048)
	testutil.PushImage(t, reg.DirectHost, "b", "1", 2, 2048)
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: reg, url: 'http://%s'}\n", reg.Host))
	root := t.TempDir()
	for _, ref := range []string{"reg/a:1", "reg/b:1"} {
		if out, err := run(t, "pull", "--config", cfg, "--root", root, ref); err != nil {
			t.Fatalf("pull %s: %v\n%s", ref, err, out)
		}
	}
	all := len(blobFiles(root)) // 2 x (manifest + config + 2 layers)
	if all != 8 {
		t.Fatalf("blobs after two pulls = %d, want 8", all)
	}
	// An unreferenced blob a hosted repository links is kept.
	strayHex := digestOf([]byte("x")).Encoded()
	stray := filepath.Join(root, "blobs/sha256", strayHex)
	os.WriteFile(stray, []byte("x"), 0o444)
	link := filepath.Join(root, ".clowder/hosted/local/x/_blobs/sha256", strayHex)
	os.MkdirAll(filepath.Dir(link), 0o755)
	os.WriteFile(link, nil, 0o644)

	if out, err := run(t, "gc", "--config", cfg, "--root", root); err != nil || !strings.Contains(out, "removed 0 blobs") {
		t.Fatalf("gc with everything named = %v\n%s", err, out)
	}
	if out, err := run(t, "rm", "--config", cfg, "--root", root, "reg/a:1"); err != nil || !strings.Contains(out, "removed reg/a:1") {
		t.Fatalf("rm = %v\n%s", err, out)
	}
	// Within the grace period nothing goes.
	if out, err := run(t, "gc", "--config", cfg, "--root", root); err != nil || !strings.Contains(out, "removed 0 blobs") || !strings.Contains(out, "kept 4 recent") {
		t.Fatalf("gc within grace = %v\n%s", err, out)
	}
	out, err := run(t, "gc", "--config", cfg, "--root", root, "--grace", "0s")
	if err != nil || !strings.Contains(out, "removed 4 blobs") {
		t.Fatalf("gc --grace 0s = %v\n%s", err, out)
	}
	if n := len(blobFiles(root)); n != 5 { // b's 4 + the linked stray
		t.Errorf("blobs after gc = %d, want 5", n)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("a hosted-linked blob was swept: %v", err)
	}
	// b is intact and still served with the upstream gone.
	reg.SetDown(true)
	if out, err := run(t, "verify", "--config", cfg, "--root", root); err != nil {
		t.Errorf("verify after gc: %v\n%s", err, out)
	}
	if out, err := run(t, "export", "--config", cfg, "--root", root, "reg/b:1", "-o", filepath.Join(t.TempDir(), "b.tar")); err != nil {
		t.Errorf("b is not complete after gc: %v\n%s", err, out)
	}
	if out, err := run(t, "rm", "--config", cfg, "--root", root, "reg/zzz:1"); err == nil {
		t.Errorf("rm of an unknown name succeeded: %s", out)
	}
}
