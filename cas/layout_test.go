package cas_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/cas/casstest"
)

func TestLayoutConformance(t *testing.T) {
	casstest.Run(t, func(t *testing.T) cas.Store {
		l, err := cas.OpenLayout(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

func TestLayoutFiles(t *testing.T) {
	root := t.TempDir()
	if _, err := cas.OpenLayout(root); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "oci-layout"))
	if err != nil || string(b) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s, %v", b, err)
	}
	var idx ocispec.Index
	b, _ = os.ReadFile(filepath.Join(root, "index.json"))
	if err := json.Unmarshal(b, &idx); err != nil || idx.SchemaVersion != 2 || idx.Manifests == nil {
		t.Errorf("index.json = %s, %v", b, err)
	}
}

// Stale ingest files (a killed process) are removed on open; a live
// writer's file is not.
func TestLayoutCleansStaleIngest(t *testing.T) {
	root := t.TempDir()
	l, err := cas.OpenLayout(root)
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(root, ".clowder/ingest/deadbeef-stale")
	if err := os.WriteFile(stale, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := l.Writer(context.Background(), ocispec.Descriptor{Digest: digest.FromString("x"), Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := cas.OpenLayout(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale ingest file survived: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(root, ".clowder/ingest"))
	if len(ents) != 1 {
		t.Errorf("live writer's ingest file was removed (%d files left)", len(ents))
	}
}

// Two processes tagging names on one root at once lose no name: the
// index.json lock holds across processes.
func TestLayoutIndexLockAcrossProcesses(t *testing.T) {
	if os.Getenv("CAS_TAG_CHILD") != "" {
		root, prefix := os.Getenv("CAS_TAG_ROOT"), os.Getenv("CAS_TAG_CHILD")
		n, _ := strconv.Atoi(os.Getenv("CAS_TAG_N"))
		l, err := cas.OpenLayout(root)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			b := []byte(prefix + strconv.Itoa(i))
			desc := ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
			if _, err := cas.Ingest(context.Background(), l, desc, bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
			if err := l.Tag(context.Background(), fmt.Sprintf("%s/n:%d", prefix, i), desc); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	root := t.TempDir()
	if _, err := cas.OpenLayout(root); err != nil {
		t.Fatal(err)
	}
	const n = 60
	var wg sync.WaitGroup
	for _, p := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestLayoutIndexLockAcrossProcesses$")
			cmd.Env = append(os.Environ(), "CAS_TAG_CHILD="+p, "CAS_TAG_ROOT="+root, "CAS_TAG_N="+strconv.Itoa(n))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("child %s: %v\n%s", p, err, out)
			}
		}()
	}
	wg.Wait()
	l, _ := cas.OpenLayout(root)
	list, err := l.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3*n {
		t.Errorf("names after 3 processes x %d tags = %d, want %d", n, len(list), 3*n)
	}
}

// The layout names only blobs it holds; TagHeld writes a swept blob again
// from the caller's bytes and names it.
func TestLayoutTagNeedsTheBlob(t *testing.T) {
	ctx := context.Background()
	l, err := cas.OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"schemaVersion":2}`)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(body), Size: int64(len(body))}
	if err := l.Tag(ctx, "a/b:1", desc); !errors.Is(err, cas.ErrNotFound) {
		t.Fatalf("Tag of a blob the layout does not hold = %v, want ErrNotFound", err)
	}
	if _, err := l.Resolve(ctx, "a/b:1"); !errors.Is(err, cas.ErrNotFound) {
		t.Fatalf("refused name recorded anyway: %v", err)
	}
	if err := cas.TagHeld(ctx, l, "a/b:1", desc, body); err != nil {
		t.Fatalf("TagHeld = %v", err)
	}
	if got, err := cas.ReadAll(ctx, l, desc.Digest, 1<<10); err != nil || string(got) != string(body) {
		t.Errorf("blob after TagHeld = %q, %v", got, err)
	}
	if got, err := l.Resolve(ctx, "a/b:1"); err != nil || got.Digest != desc.Digest {
		t.Errorf("Resolve after TagHeld = %v, %v", got.Digest, err)
	}
}
