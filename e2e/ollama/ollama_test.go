// Package ollama_test runs the real ollama client (v0.32.15, built by
// `make tools`) against Clowder, in front of a fake registry.ollama.ai that
// reproduces the real one's quirks on loopback.
package ollama_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
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

type daemon struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

func start(t *testing.T, name string, env []string, ready string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, log: &log}
	t.Cleanup(d.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up at %s: %v\n%s", name, ready, err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *daemon) stop() {
	if d.cmd.Process != nil {
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		_ = d.cmd.Wait()
	}
}

type env struct {
	t        *testing.T
	ollama   string
	ollamaEv []string
	models   string
	clowder  string // host:port
	corp     string // the listener whose default upstream is corp
	root     string
	clog     *bytes.Buffer
}

func (e *env) ollamaCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.ollama, args...)
	cmd.Env = append(os.Environ(), e.ollamaEv...)
	out, err := cmd.CombinedOutput()
	e.t.Logf("ollama %s\n%s", strings.Join(args, " "), lastLines(string(out), 5))
	return string(out), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func setup(t *testing.T, o *testutil.OllamaRegistry, corp *testutil.Registry) *env {
	bin := testutil.NeedTool(t, "OLLAMA")
	clowder := testutil.NeedTool(t, "CLOWDER_BIN")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "clowder.yaml")
	caddr, corpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %s
root: %s
listeners:
  - {listen: %s, default_upstream: corp}  # a second port serves the company registry to ollama clients
upstreams:
  - {name: registry.ollama.ai, type: ollama, url: '%s', tag_ttl: 1h}
  - {name: corp, type: oci, url: 'http://%s'}
`, caddr, filepath.Join(dir, "cache"), corpAddr, o.Server.URL, corp.Host)), 0o644)
	c := start(t, clowder, nil, "http://"+caddr+"/v2/", "serve", "--config", cfg)
	oaddr := testutil.FreeAddr(t)
	home := filepath.Join(dir, "home")
	models := filepath.Join(dir, "models")
	os.MkdirAll(home, 0o755)
	ev := []string{"HOME=" + home, "OLLAMA_MODELS=" + models, "OLLAMA_HOST=" + oaddr, "OLLAMA_NOPRUNE=1"}
	start(t, bin, ev, "http://"+oaddr+"/", "serve")
	return &env{t: t, ollama: bin, ollamaEv: ev, models: models, clowder: caddr, corp: corpAddr, clog: c.log, root: filepath.Join(dir, "cache")}
}

// checkBlobs hashes every blob ollama stored.
func (e *env) checkBlobs(min int) {
	e.t.Helper()
	files, _ := filepath.Glob(filepath.Join(e.models, "blobs", "sha256-*"))
	if len(files) < min {
		e.t.Fatalf("ollama holds %d blobs, want >= %d", len(files), min)
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			e.t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, fh)
		fh.Close()
		if got := "sha256-" + hex.EncodeToString(h.Sum(nil)); got != filepath.Base(f) {
			e.t.Errorf("ollama blob %s hashes to %s", filepath.Base(f), got)
		}
	}
}

// distinct counts the blobs of models (template, licence and params layers
// are shared, and stored once).
func distinct(ms ...*testutil.OllamaModel) int {
	seen := map[string]bool{}
	for _, m := range ms {
		for d := range m.Blobs {
			seen[d.String()] = true
		}
	}
	return len(seen)
}

func TestOllamaPullThroughClowder(t *testing.T) {
	o := testutil.NewOllamaRegistry(t)
	small := testutil.NewOllamaModel(8 << 20)  // 32 MiB GGUF
	large := testutil.NewOllamaModel(28 << 20) // 112 MiB: parallel ranged parts
	o.Add("library/tiny:latest", small)
	o.Add("library/big:1b", large)
	corp := testutil.NewRegistry(t, testutil.RegistryOptions{})
	team := testutil.NewOllamaModel(1 << 20)
	testutil.PushRaw(t, corp.DirectHost, "team/model", "v1", team.OCI(), team.Blobs)
	e := setup(t, o, corp)

	ref := e.clowder + "/library/tiny:latest"
	out, err := e.ollamaCmd("pull", "--insecure", ref)
	if err != nil || !strings.Contains(out, "success") {
		t.Fatalf("ollama pull %s = %v\n%s\nclowder log:\n%s", ref, err, out, lastLines(e.clog.String(), 30))
	}
	out, err = e.ollamaCmd("list")
	if err != nil || !strings.Contains(out, ref) {
		t.Fatalf("ollama list = %v, want %s in\n%s", err, ref, out)
	}
	e.checkBlobs(len(small.Blobs))

	// Cold large layer: the client opens parallel ranged parts while the
	// fill runs; the object store still sends the blob once.
	bigRef := e.clowder + "/library/big:1b"
	out, err = e.ollamaCmd("pull", "--insecure", bigRef)
	if err != nil || !strings.Contains(out, "success") {
		t.Fatalf("ollama pull %s = %v\n%s\nclowder log:\n%s", bigRef, err, out, lastLines(e.clog.String(), 30))
	}
	if full, ranged := o.StoreGets(large.Model); full != 1 || ranged != 0 {
		t.Errorf("object store GETs of the 112 MiB layer: %d full, %d ranged; want exactly 1 (the fill)", full, ranged)
	}
	parts := strings.Count(e.clog.String(), `"Go-http-client`)
	if parts < 2 {
		t.Errorf("clowder saw %d ranged part requests from ollama, want several", parts)
	}
	e.checkBlobs(distinct(small, large))

	// The same model is an OCI artifact: oras reads it through Clowder, and
	// the cache directory is a layout oras can copy it from.
	if oras := os.Getenv("ORAS"); oras != "" {
		for _, args := range [][]string{
			{"pull", "--plain-http", "-o", t.TempDir(), e.clowder + "/registry.ollama.ai/library/tiny:latest"},
			{"copy", "--from-oci-layout", e.root + "@registry.ollama.ai/library/tiny:latest", "--to-oci-layout", filepath.Join(t.TempDir(), "copy") + ":tiny"},
		} {
			if out, err := exec.Command(oras, args...).CombinedOutput(); err != nil {
				t.Errorf("oras %s = %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	}

	// An OCI-packaged model in a company registry, on the listener whose
	// default upstream is that registry.
	teamRef := e.corp + "/team/model:v1"
	out, err = e.ollamaCmd("pull", "--insecure", teamRef)
	if err != nil || !strings.Contains(out, "success") {
		t.Fatalf("ollama pull %s (OCI manifest, ollama layers) = %v\n%s\nclowder log:\n%s", teamRef, err, out, lastLines(e.clog.String(), 20))
	}
	e.checkBlobs(distinct(small, large, team))

	// Warm, with the upstream and its object store gone.
	if _, err := e.ollamaCmd("rm", ref); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ollamaCmd("rm", bigRef); err != nil {
		t.Fatal(err)
	}
	o.Server.Close()
	o.Store.Close()
	for _, r := range []string{ref, bigRef} {
		out, err = e.ollamaCmd("pull", "--insecure", r)
		if err != nil || !strings.Contains(out, "success") {
			t.Fatalf("warm ollama pull %s with the upstream down = %v\n%s\nclowder log:\n%s", r, err, out, lastLines(e.clog.String(), 20))
		}
	}
	e.checkBlobs(distinct(small, large))
}

// With client authentication on, the real ollama client gets in the way
// ollama.com lets it in: its token request is signed with its ed25519 key
// (~/.ollama/id_ed25519.pub, listed in auth.ollama_keys); its ranged parts
// go to the presigned Location.
func TestOllamaPullWithKeyAuth(t *testing.T) {
	bin := testutil.NeedTool(t, "OLLAMA")
	clowder := testutil.NeedTool(t, "CLOWDER_BIN")
	o := testutil.NewOllamaRegistry(t)
	m := testutil.NewOllamaModel(28 << 20) // 112 MiB: ranged parts
	o.Add("library/m:1", m)
	dir := t.TempDir()

	// ollama serve makes its key pair on first start.
	oaddr := testutil.FreeAddr(t)
	home := filepath.Join(dir, "home")
	os.MkdirAll(home, 0o755)
	ev := []string{"HOME=" + home, "OLLAMA_MODELS=" + filepath.Join(dir, "models"), "OLLAMA_HOST=" + oaddr, "OLLAMA_NOPRUNE=1"}
	start(t, bin, ev, "http://"+oaddr+"/", "serve")
	pub, err := os.ReadFile(filepath.Join(home, ".ollama", "id_ed25519.pub"))
	if err != nil {
		t.Fatalf("ollama's public key: %v", err)
	}
	caddr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "clowder.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %s
root: %s
auth:
  ollama_keys:
    - {user: alice, key: '%s'}
  rules:
    - {names: ["registry.ollama.ai/*"], users: [alice], actions: [pull]}
upstreams:
  - {name: registry.ollama.ai, type: ollama, url: '%s'}
`, caddr, filepath.Join(dir, "cache"), strings.TrimSpace(string(pub)), o.Server.URL)), 0o644)
	c := start(t, clowder, nil, "http://"+caddr+"/healthz", "serve", "--config", cfg)
	e := &env{t: t, ollama: bin, ollamaEv: ev, models: filepath.Join(dir, "models"), clowder: caddr, clog: c.log}

	ref := caddr + "/library/m:1"
	out, err := e.ollamaCmd("pull", "--insecure", ref)
	if err != nil || !strings.Contains(out, "success") {
		t.Fatalf("ollama pull %s with key auth = %v\n%s\nclowder log:\n%s", ref, err, out, lastLines(c.log.String(), 30))
	}
	e.checkBlobs(len(m.Blobs))
	log := c.log.String()
	if !strings.Contains(log, `"path":"/token"`) || !strings.Contains(log, `"status":401`) {
		t.Errorf("clowder log shows no 401 challenge and token request:\n%s", lastLines(log, 30))
	}

	// Another key is refused.
	resp, err := http.Get("http://" + caddr + "/v2/registry.ollama.ai/library/m/manifests/1")
	if err != nil || resp.StatusCode != 401 {
		t.Errorf("anonymous manifest = %v %v, want 401", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
}
