package server_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// assertLayoutValid reads root with go-containerregistry's layout reader
// (a strict reader: it verifies blob digests) and finds name -> digest.
func assertLayoutValid(t *testing.T, root, name, digest string) {
	t.Helper()
	if onS3() {
		return // root is the working area; the bucket is the layout (e2e TestFleet reads a copy)
	}
	// A fill commits a moment after its clients got the last, verified
	// byte: wait for the ingest folder to empty.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ents, _ := os.ReadDir(filepath.Join(root, ".clowder", "ingest")); len(ents) == 0 {
			break
		}
	}
	p, err := layout.FromPath(root)
	if err != nil {
		t.Fatalf("layout.FromPath: %v", err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatalf("layout index: %v", err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] != name {
			continue
		}
		if d.Digest.String() != digest {
			t.Fatalf("layout %s -> %s, want %s", name, d.Digest, digest)
		}
		img, err := ii.Image(d.Digest)
		if err != nil {
			t.Fatalf("layout image %s: %v", name, err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatalf("layout layer: %v", err)
			}
			rc.Close()
		}
		return
	}
	t.Fatalf("layout has no %s", name)
}
