package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// The upstream: a CNCF distribution registry on loopback.

type registry struct {
	addr string // 127.0.0.1:PORT
	dir  string
	p    *proc
}

// startRegistry runs $REGISTRY with filesystem storage under a temp dir
// (the same config as hack/registry-sandbox.sh).
func startRegistry(t *testing.T, tl *tools) *registry {
	t.Helper()
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: clowder-e2e-not-secret
`, filepath.Join(dir, "data"), addr)
		cfgPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, "registry", filepath.Join(dir, "registry.log"), command(tl.registry, "serve", cfgPath))
		if err := waitReady(p, addr); err != nil {
			p.stop()
			lastErr = err
			continue // most likely the port was taken meanwhile
		}
		return &registry{addr: addr, dir: dir, p: p}
	}
	t.Fatalf("registry: %v", lastErr)
	return nil
}

// stop stops the registry and checks it no longer answers.
func (r *registry) stop(t *testing.T) {
	t.Helper()
	r.p.stop()
	c := &http.Client{Timeout: 2 * time.Second}
	if resp, err := c.Get("http://" + r.addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET http://%s/v2/ after stopping the registry = %s, want a connection error", r.addr, resp.Status)
	}
	t.Logf("upstream registry %s stopped", r.addr)
}

// pause freezes the registry (SIGSTOP): connections are still accepted by
// the kernel, but nothing answers. The returned func resumes it; it also
// runs on cleanup.
func (r *registry) pause(t *testing.T) (resume func()) {
	t.Helper()
	pgid := r.p.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP registry: %v", err)
	}
	t.Logf("upstream registry %s paused (SIGSTOP)", r.addr)
	var once sync.Once
	resume = func() {
		once.Do(func() {
			_ = syscall.Kill(-pgid, syscall.SIGCONT)
			t.Logf("upstream registry %s resumed (SIGCONT)", r.addr)
		})
	}
	t.Cleanup(resume)
	return resume
}

func waitReady(p *proc, addr string) error {
	deadline := time.Now().Add(procStartTimeout)
	c := &http.Client{Timeout: 2 * time.Second}
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited before answering GET http://%s/v2/ (%v); log:\n%s", p.name, addr, p.err, tail(p.log(), 30))
		}
		resp, err := c.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized { // up; 401: client auth on
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("GET http://%s/v2/ (%s) not ready after %s: %v; log:\n%s", addr, p.name, procStartTimeout, last, tail(p.log(), 30))
}

// ---------------------------------------------------------------------------
// Test content, pushed with real clients.

// Repositories and tags on the upstream registry.
const (
	refBase       = "test/img:base"  // OCI image, one platform-less manifest, two layers
	refAmd64      = "test/img:amd64" // base with platform linux/amd64
	refArm64      = "test/img:arm64" // base with platform linux/arm64
	refMulti      = "test/img:multi" // OCI index (crane: descriptors carry artifactType)
	refPlain      = "test/img:plain" // the same children in an index without artifactType
	refNested     = "team/a/b:1"     // base under a nested name
	refDocker     = "test/docker:1"  // Docker v2 media types
	refArt        = "test/art:v1"    // oras artifact: one file with a title
	refHelloMulti = "library/hello:multi"
	refHello1     = "library/hello:1"

	artifactType  = "application/vnd.clowder.test"
	artifactTitle = "artifact.txt"
)

// content is what was pushed and the digests the upstream reports for it.
type content struct {
	digest   map[string]string // repo:tag -> digest, from `crane digest` on the upstream
	manifest map[string][]byte // repo:tag -> manifest bytes, from `crane manifest` on the upstream
	amd64    string            // child digests of refMulti (== refAmd64, refArm64)
	arm64    string
	artifact []byte // the file pushed as refArt
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeTar writes a tarball with the given files (path -> content).
func writeTar(t testing.TB, path string, files map[string][]byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pushContent pushes the test content to reg with crane and oras and
// records the upstream's digests. Content is random per run.
func pushContent(t *testing.T, tl *tools, reg string) *content {
	t.Helper()
	dir := t.TempDir()
	l1, l2 := filepath.Join(dir, "layer1.tar"), filepath.Join(dir, "layer2.tar")
	writeTar(t, l1, map[string][]byte{"etc/hello.txt": []byte(base64.StdEncoding.EncodeToString(randomBytes(t, 48<<10)) + "\n")})
	writeTar(t, l2, map[string][]byte{"opt/data.bin": randomBytes(t, 768<<10)}) // incompressible: ~768 KiB blob
	r := func(ref string) string { return reg + "/" + ref }

	crane := func(args ...string) cmd { return command(tl.crane, args...) }
	crane("append", "--insecure", "--oci-empty-base", "-f", l1, "-f", l2, "-t", r(refBase)).must(t)
	crane("mutate", "--insecure", "--set-platform", "linux/amd64", r(refBase), "-t", r(refAmd64)).must(t)
	crane("mutate", "--insecure", "--set-platform", "linux/arm64", r(refBase), "-t", r(refArm64)).must(t)
	crane("index", "append", "--insecure", "-m", r(refAmd64), "-m", r(refArm64), "-t", r(refMulti)).must(t)
	crane("copy", "--insecure", r(refBase), r(refNested)).must(t)
	crane("copy", "--insecure", r(refMulti), r(refHelloMulti)).must(t)
	crane("copy", "--insecure", r(refBase), r(refHello1)).must(t)
	crane("append", "--insecure", "-f", l1, "-t", r(refDocker)).must(t)

	c := &content{digest: map[string]string{}, manifest: map[string][]byte{}}

	// An index skopeo keeps byte-exact: the same children, no artifactType.
	multi := parseManifest(t, refMulti, []byte(crane("manifest", "--insecure", r(refMulti)).must(t)))
	type plainDesc struct {
		MediaType string    `json:"mediaType"`
		Digest    string    `json:"digest"`
		Size      int64     `json:"size"`
		Platform  *platform `json:"platform,omitempty"`
	}
	plain := struct {
		SchemaVersion int         `json:"schemaVersion"`
		MediaType     string      `json:"mediaType"`
		Manifests     []plainDesc `json:"manifests"`
	}{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json"}
	for _, d := range multi.Manifests {
		plain.Manifests = append(plain.Manifests, plainDesc{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, Platform: d.Platform})
	}
	plainJSON, _ := json.Marshal(plain)
	plainPath := filepath.Join(dir, "plain-index.json")
	if err := os.WriteFile(plainPath, plainJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	command(tl.oras, "manifest", "push", "--plain-http", r(refPlain), plainPath, "--media-type", "application/vnd.oci.image.index.v1+json").must(t)

	// An oras artifact: one file, which oras annotates with its title.
	c.artifact = []byte(fmt.Sprintf("hello from clowder e2e %x\n", randomBytes(t, 16)))
	if err := os.WriteFile(filepath.Join(dir, artifactTitle), c.artifact, 0o644); err != nil {
		t.Fatal(err)
	}
	command(tl.oras, "push", "--plain-http", r(refArt), "--artifact-type", artifactType, artifactTitle+":text/plain").inDir(dir).must(t)

	for _, ref := range []string{refBase, refAmd64, refArm64, refMulti, refPlain, refNested, refDocker, refArt, refHelloMulti, refHello1} {
		d := strings.TrimSpace(crane("digest", "--insecure", r(ref)).must(t))
		if !strings.HasPrefix(d, "sha256:") {
			t.Fatalf("crane digest %s = %q, want a sha256 digest", r(ref), d)
		}
		c.digest[ref] = d
		c.manifest[ref] = []byte(crane("manifest", "--insecure", r(ref)).must(t))
		if got := sha256Digest(c.manifest[ref]); got != d {
			t.Fatalf("sha256(crane manifest %s) = %s, want %s", r(ref), got, d)
		}
	}
	c.amd64 = strings.TrimSpace(crane("digest", "--insecure", "--platform", "linux/amd64", r(refMulti)).must(t))
	c.arm64 = strings.TrimSpace(crane("digest", "--insecure", "--platform", "linux/arm64", r(refMulti)).must(t))
	if c.amd64 != c.digest[refAmd64] || c.arm64 != c.digest[refArm64] {
		t.Fatalf("index children amd64=%s arm64=%s, want %s %s", c.amd64, c.arm64, c.digest[refAmd64], c.digest[refArm64])
	}
	if got := sha256Digest(plainJSON); got != c.digest[refPlain] {
		t.Fatalf("crane digest %s = %s, want %s (the pushed bytes)", r(refPlain), c.digest[refPlain], got)
	}
	if mt := parseManifest(t, refDocker, c.manifest[refDocker]).MediaType; mt != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Fatalf("media type of %s = %q, want Docker v2", refDocker, mt)
	}
	t.Logf("upstream digests: %v", c.digest)
	return c
}

// ---------------------------------------------------------------------------
// Clowder.

type clowder struct {
	addr string // 127.0.0.1:PORT it listens on
	root string
	p    *proc
}

// writeConfig writes a clowder config: upstream `up` (aliased
// registry.example.test for containerd mirrors) and upstream `docker.io`,
// the default, both pointing at the registry. listen is 127.0.0.1:0: the
// real port is read from clowder's log.
func writeConfig(t testing.TB, dir, regAddr, root string) string {
	t.Helper()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
root: %s
upstreams:
  - name: up
    type: oci
    url: http://%s
    tag_ttl: 0s
    aliases: [registry.example.test]
  - name: docker.io
    type: oci
    url: http://%s
    default: true
    tag_ttl: 1m
`, root, regAddr, regAddr)
	p := filepath.Join(dir, "clowder.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startClowder runs `clowder serve --config cfg [args...]`, waits for the
// "clowder serving" log line and for /v2/ to answer.
func startClowder(t *testing.T, tl *tools, cfg, logPath string, args ...string) *clowder {
	t.Helper()
	p := startProc(t, "clowder", logPath, command(tl.clowder, append([]string{"serve", "--config", cfg}, args...)...))
	deadline := time.Now().Add(procStartTimeout)
	for {
		// "listening" (one per listener, the config's listen first), then
		// "clowder serving"; older builds put listen on the latter.
		addr := ""
		for _, l := range logLines(t, logPath) {
			if l["message"] == "listening" && addr == "" {
				addr = str(l, "listen")
			}
			if l["message"] == "clowder serving" {
				if a := str(l, "listen"); a != "" {
					addr = a
				}
				root := str(l, "root")
				if addr == "" {
					t.Fatalf("clowder serve: no listen address in its log:\n%s", tail(p.log(), 30))
				}
				if err := waitReady(p, addr); err != nil {
					t.Fatal(err)
				}
				t.Logf("clowder serving on %s, root %s (log %s)", addr, root, logPath)
				return &clowder{addr: addr, root: root, p: p}
			}
		}
		if p.exited() {
			t.Fatalf("clowder serve exited (%v); log:\n%s", p.err, tail(p.log(), 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("clowder serve: no \"clowder serving\" log line after %s; log:\n%s", procStartTimeout, tail(p.log(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logLines parses clowder's JSON log lines (non-JSON lines are skipped).
func logLines(t testing.TB, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// requests returns clowder's access-log lines (message "request").
func (c *clowder) requests(t testing.TB) []map[string]any {
	var out []map[string]any
	for _, l := range logLines(t, c.p.logPath) {
		if l["message"] == "request" {
			out = append(out, l)
		}
	}
	return out
}

func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

func num(m map[string]any, k string) int { f, _ := m[k].(float64); return int(f) }
