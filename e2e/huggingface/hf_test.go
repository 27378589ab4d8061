// Package huggingface_test runs real Hugging Face clients against Clowder in
// front of a fake hub on loopback: huggingface.js (@huggingface/hub, from
// npm; the Python client cannot be installed here) and oras on the OCI view.
package huggingface_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clowder-dev/clowder/internal/testutil"
)

type result struct {
	File     map[string]string `json:"file"`
	Snapshot map[string]string `json:"snapshot"`
}

func hfjs(t *testing.T, hubURL, repo, file string) result {
	t.Helper()
	dir := testutil.NeedTool(t, "HFJS_DIR")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "hfjs.mjs")
	cmd.Env = append(os.Environ(), "HFJS_DIR="+dir, "HUB_URL="+hubURL, "HF_REPO="+repo, "HF_FILE="+file, "HF_CACHE="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("HUB_URL=%s node hfjs.mjs (%s, %s)", hubURL, repo, file)
	if err != nil {
		t.Fatalf("huggingface.js against %s: %v\n%s", hubURL, err, stderr.String())
	}
	// The library logs "Downloading ..." lines on stdout; the result is last.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("huggingface.js output %q: %v", out, err)
	}
	return r
}

func TestHuggingFaceClientsThroughClowder(t *testing.T) {
	bin := testutil.NeedTool(t, "CLOWDER_BIN")
	oras := testutil.NeedTool(t, "ORAS")
	hub := testutil.NewHub(t)
	commit := strings.Repeat("c", 40)
	files := map[string]testutil.HubFile{
		"config.json":         {Data: []byte(`{"model_type":"llama","hidden_size":64}`)},
		"README.md":           {Data: []byte("# Tiny\n")},
		"model.safetensors":   {Data: bytes.Repeat([]byte("weights!"), 300000), LFS: true},
		"tiny.Q4_0.gguf":      {Data: testutil.GGUF(100000), LFS: true},
		"tokenizer/vocab.txt": {Data: []byte("a\nb\nc\n")},
	}
	hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/Tiny", Refs: map[string]string{"main": commit}, Commits: map[string]map[string]testutil.HubFile{commit: files}})

	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "clowder.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: %s\nroot: %s\nupstreams:\n  - {name: huggingface.co, type: huggingface, url: '%s', tag_ttl: 0s}\n", addr, filepath.Join(dir, "cache"), hub.URL)), 0o644)
	cmd := exec.Command(bin, "serve", "--config", cfg)
	var log bytes.Buffer
	cmd.Stderr = &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("clowder did not start:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	clowder := "http://" + addr

	direct := hfjs(t, hub.URL, "Org/Tiny", "model.safetensors")
	if len(direct.Snapshot) != len(files) {
		t.Fatalf("direct snapshot has %d files, want %d: %v", len(direct.Snapshot), len(files), direct.Snapshot)
	}
	cold := hfjs(t, clowder, "Org/Tiny", "model.safetensors")
	if fmt.Sprint(cold) != fmt.Sprint(direct) {
		t.Errorf("through Clowder (cold) = %v\nwant (direct) %v\nclowder log:\n%s", cold, direct, log.String())
	}

	// The OCI view with oras: same files, same bytes.
	out := t.TempDir()
	ocmd := exec.Command(oras, "pull", "--plain-http", "-o", out, addr+"/huggingface.co/org/tiny:main")
	if b, err := ocmd.CombinedOutput(); err != nil {
		t.Fatalf("oras pull of the OCI view: %v\n%s", err, b)
	}
	for p, f := range files {
		b, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || !bytes.Equal(b, f.Data) {
			t.Errorf("oras pull: %s: %v (bytes right %v)", p, err, bytes.Equal(b, f.Data))
		}
	}

	// Warm, with the hub and its CDN gone.
	hub.Server.Close()
	hub.CDN.Close()
	warm := hfjs(t, clowder, "Org/Tiny", "model.safetensors")
	if fmt.Sprint(warm) != fmt.Sprint(direct) {
		t.Errorf("through Clowder (warm, hub down) = %v\nwant %v\nclowder log:\n%s", warm, direct, log.String())
	}
}
