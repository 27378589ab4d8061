package conformance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tool returns the path of a pinned client (tools.mk exports them) and
// skips unless CLOWDER_E2E is set.
func tool(t *testing.T, env, name string) string {
	t.Helper()
	if os.Getenv("CLOWDER_E2E") == "" {
		t.Skip("end-to-end: set CLOWDER_E2E=1 (make conformance)")
	}
	p := os.Getenv(env)
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache", "clowder", "tools", "bin", name)
		if env == "CLOWDER_BIN" {
			p = filepath.Join("..", "bin", "clowder")
		}
	}
	p, _ = filepath.Abs(p)
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s=%q is not an executable: run make tools build", env, p)
	}
	return p
}

// run runs a command with a deadline and fails the test on error.
func run(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bin, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+filepath.Join(dir, ".docker"))
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// startClowder runs `clowder serve` on a free loopback port with hosted
// repositories under "local" and no upstream; it returns host:port.
func startClowder(t *testing.T, bin, root string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "clowder.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:0\nroot: %s\nhosted_prefix: local\nupstreams: []\n", root)), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "clowder.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(bin, "serve", "--config", cfg)
	c.Stderr = logf
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Process.Kill()
		_ = c.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("clowder log:\n%s", b)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		f, _ := os.Open(logPath)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && l["message"] == "listening" {
				f.Close()
				return l["listen"].(string)
			}
		}
		f.Close()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("clowder did not start listening")
	return ""
}

func writeRandom(t *testing.T, p string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// indexNames returns the names in the layout's index.json.
func indexNames(t *testing.T, root string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range idx.Manifests {
		out[m.Annotations["org.opencontainers.image.ref.name"]] = true
	}
	return out
}

// A site pushes its own fine-tuned model with oras and crane, pulls it back,
// and finds it named in the layout, readable offline by oras.
func TestPushModelWithOrasAndCrane(t *testing.T) {
	clowder := tool(t, "CLOWDER_BIN", "clowder")
	oras := tool(t, "ORAS", "oras")
	crane := tool(t, "CRANE", "crane")
	root := filepath.Join(t.TempDir(), "root")
	host := startClowder(t, clowder, root)
	work := t.TempDir()

	// oras: a model artifact of two files (several MiB, so oras uses more
	// than one request per blob where it wants to).
	weights := writeRandom(t, filepath.Join(work, "model.safetensors"), 6<<20)
	config := []byte(`{"architectures":["LlamaForCausalLM"],"hidden_size":64}`)
	if err := os.WriteFile(filepath.Join(work, "config.json"), config, 0o644); err != nil {
		t.Fatal(err)
	}
	ref := host + "/local/team/model:v1"
	run(t, work, oras, "push", "--plain-http", "--artifact-type", "application/vnd.example.model.v1",
		ref, "model.safetensors:application/octet-stream", "config.json:application/json")
	pulled := filepath.Join(work, "pulled")
	run(t, work, oras, "pull", "--plain-http", "-o", pulled, ref)
	if got, _ := os.ReadFile(filepath.Join(pulled, "model.safetensors")); !bytes.Equal(got, weights) {
		t.Fatalf("oras pull: model.safetensors differs (%d bytes, pushed %d)", len(got), len(weights))
	}
	if got, _ := os.ReadFile(filepath.Join(pulled, "config.json")); !bytes.Equal(got, config) {
		t.Fatalf("oras pull: config.json = %q", got)
	}
	// A signature-like referrer through the referrers API.
	run(t, work, oras, "attach", "--plain-http", "--artifact-type", "application/vnd.example.signature", ref, "config.json:application/json")
	if out := run(t, work, oras, "discover", "--plain-http", "--format", "json", ref); !strings.Contains(out, "application/vnd.example.signature") {
		t.Fatalf("oras discover: no referrer in %s", out)
	}

	// crane: the same weights as an image layer, then a copy to another
	// hosted repository (a cross-repository mount) and a listing.
	if err := exec.Command("tar", "-C", work, "-cf", filepath.Join(work, "layer.tar"), "model.safetensors").Run(); err != nil {
		t.Fatal(err)
	}
	ref2 := host + "/local/team/model:v2"
	run(t, work, crane, "append", "--insecure", "--oci-empty-base", "-f", "layer.tar", "-t", ref2)
	run(t, work, crane, "copy", "--insecure", ref2, host+"/local/team/model-copy:v2")
	d1 := strings.TrimSpace(run(t, work, crane, "digest", "--insecure", ref2))
	d2 := strings.TrimSpace(run(t, work, crane, "digest", "--insecure", host+"/local/team/model-copy:v2"))
	if d1 == "" || d1 != d2 {
		t.Fatalf("crane copy: digests %q and %q", d1, d2)
	}
	run(t, work, crane, "export", "--insecure", host+"/local/team/model-copy:v2", filepath.Join(work, "fs.tar"))
	if out := run(t, work, "tar", "-tf", filepath.Join(work, "fs.tar")); !strings.Contains(out, "model.safetensors") {
		t.Fatalf("crane export: %s", out)
	}
	if out := run(t, work, crane, "ls", "--insecure", host+"/local/team/model"); out != "v1\nv2\n" {
		t.Fatalf("crane ls = %q", out)
	}
	if out := run(t, work, crane, "catalog", "--insecure", host); out != "local/team/model\nlocal/team/model-copy\n" {
		t.Fatalf("crane catalog = %q", out)
	}

	names := indexNames(t, root)
	for _, n := range []string{"local/team/model:v1", "local/team/model:v2", "local/team/model-copy:v2", "local/team/model-copy@" + d1} {
		if !names[n] {
			t.Errorf("index.json lacks %s", n)
		}
	}
	// The layout is a plain OCI layout: oras reads the pushed model offline
	// (LAYOUT@NAME: oras splits LAYOUT:TAG at the last colon).
	if out := run(t, work, oras, "manifest", "fetch", "--oci-layout", root+"@local/team/model:v1"); !strings.Contains(out, "application/vnd.example.model.v1") {
		t.Fatalf("oras manifest fetch --oci-layout: %s", out)
	}
}
