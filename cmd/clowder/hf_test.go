package main

import (
	"bytes"
	"fmt"
	"github.com/opencontainers/go-digest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// clowder pull hf://, then path and checkout: every file is there with the
// right bytes, as a link into blobs/ (no byte copied).
func TestHFPullPathCheckout(t *testing.T) {
	hub := testutil.NewHub(t)
	commit := strings.Repeat("a", 40)
	files := map[string]testutil.HubFile{
		"config.json":            {Data: []byte(`{"model_type":"llama"}`)},
		"model.safetensors":      {Data: bytes.Repeat([]byte{7}, 200000), LFS: true},
		"tiny.gguf":              {Data: testutil.GGUF(1000), LFS: true},
		"tokenizer/special.json": {Data: []byte(`{}`)},
	}
	hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/Tiny", Refs: map[string]string{"main": commit}, Commits: map[string]map[string]testutil.HubFile{commit: files}})
	hub.Add(&testutil.HubRepo{Type: "dataset", ID: "org/set", Refs: map[string]string{"main": commit}, Commits: map[string]map[string]testutil.HubFile{commit: {"a.csv": {Data: []byte("x\n")}}}})
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: huggingface.co, type: huggingface, url: '%s'}\n", hub.URL))
	root := t.TempDir()

	out, err := run(t, "pull", "--config", cfg, "--root", root, "hf://Org/Tiny:tiny.gguf")
	if err != nil || !strings.Contains(out, "tiny.gguf fetched") || strings.Contains(out, "model.safetensors") {
		t.Fatalf("clowder pull hf://Org/Tiny:tiny.gguf = %v\n%s", err, out)
	}
	if hub.CDNGets(testutil.SHA256(files["model.safetensors"].Data)) != 0 {
		t.Error("pulling one file downloaded another LFS file")
	}
	if out, err := run(t, "pull", "--config", cfg, "--root", root, "hf://Org/Tiny@main"); err != nil || !strings.Contains(out, "model.safetensors fetched") {
		t.Fatalf("clowder pull hf://Org/Tiny@main = %v\n%s", err, out)
	}
	if out, err := run(t, "pull", "--config", cfg, "--root", root, "hf://datasets/org/set"); err != nil || !strings.Contains(out, "a.csv") {
		t.Fatalf("clowder pull hf://datasets/org/set = %v\n%s", err, out)
	}
	hub.Server.Close() // everything below works from the cache
	hub.CDN.Close()

	out, err = run(t, "path", "--config", cfg, "--root", root, "huggingface.co/org/tiny:main", "tiny.gguf")
	p := strings.TrimSpace(out)
	if b, rerr := os.ReadFile(p); err != nil || rerr != nil || !bytes.Equal(b, files["tiny.gguf"].Data) || !strings.HasPrefix(p, filepath.Join(root, "blobs", "sha256")) {
		t.Fatalf("clowder path = %q, %v", out, err)
	}
	dir := filepath.Join(t.TempDir(), "tiny")
	if out, err := run(t, "checkout", "--config", cfg, "--root", root, "huggingface.co/org/tiny:main", dir); err != nil {
		t.Fatalf("clowder checkout = %v\n%s", err, out)
	}
	for name, f := range files {
		p := filepath.Join(dir, name)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: %v, mode %v; want a link into blobs/", name, err, fi)
			continue
		}
		target, _ := os.Readlink(p)
		if !strings.HasPrefix(target, filepath.Join(root, "blobs")+"/") {
			t.Errorf("%s -> %s, not into blobs/", name, target)
		}
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, f.Data) {
			t.Errorf("%s: wrong bytes (%v)", name, err)
		}
	}
	if out, err := run(t, "checkout", "--root", root, "--config", cfg, "huggingface.co/org/nope:main", dir); err == nil {
		t.Errorf("checkout of an unknown name succeeded: %s", out)
	}
	if out, err := run(t, "pull", "--root", root, "--config", cfg, "hf://bad id"); err == nil || !strings.Contains(out, "hf://") {
		t.Errorf("pull of a bad hf ref = %v %s", err, out)
	}
}

// A GGUF pulled via Hugging Face and via ollama is stored once, and
// clowder ls reports the bytes saved.
func TestLsReportsDedup(t *testing.T) {
	hub := testutil.NewHub(t)
	gguf := testutil.GGUF(250000) // ~1 MB
	commit := strings.Repeat("b", 40)
	hub.Add(&testutil.HubRepo{Type: "model", ID: "org/m", Refs: map[string]string{"main": commit},
		Commits: map[string]map[string]testutil.HubFile{commit: {"m.gguf": {Data: gguf, LFS: true}}}})
	o := testutil.NewOllamaRegistry(t)
	m := testutil.NewOllamaModelFrom(gguf)
	o.Add("library/m:latest", m)
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: huggingface.co, type: huggingface, url: '%s'}\n  - {name: registry.ollama.ai, type: ollama, url: '%s'}\n", hub.URL, o.Server.URL))
	root := t.TempDir()
	for _, ref := range []string{"hf://org/m", "registry.ollama.ai/library/m:latest"} {
		if out, err := run(t, "pull", "--config", cfg, "--root", root, ref); err != nil {
			t.Fatalf("clowder pull %s = %v\n%s", ref, err, out)
		}
	}
	n := 0
	for _, f := range blobFiles(root) {
		if filepath.Base(f) == digestOf(gguf).Encoded() {
			n++
		}
	}
	if n != 1 {
		t.Errorf("GGUF stored %d times", n)
	}
	out, err := run(t, "ls", "--config", cfg, "--root", root)
	if err != nil || !strings.Contains(out, "registry.ollama.ai/library/m:latest") || !strings.Contains(out, "huggingface.co/org/m:main") {
		t.Fatalf("clowder ls = %v\n%s", err, out)
	}
	want := fmt.Sprintf("%s saved by dedup", human(int64(len(gguf))))
	if !strings.Contains(out, want) {
		t.Errorf("clowder ls does not report %q:\n%s", want, out)
	}
	t.Logf("clowder ls:\n%s", out)
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }
