package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// TestTier: a worker Clowder pulls through a site Clowder, for all three
// protocols, with real clients: crane and oras (OCI, plus the ?ns= mirror
// form), the real ollama client, huggingface.js. The worker's upstreams
// point at the site with the site's upstream name as URL path
// (http://site/docker.io); the site has client authentication on, so the
// worker's upstream credentials go through the site's token flow. Bytes
// must equal a direct pull, and the real upstreams must be asked once.
// Then the upstreams stop: a fresh worker (empty root) is served by the
// site alone; then the site stops: the first worker serves from its cache.
func TestTier(t *testing.T) {
	tl := needTools(t)
	ollamaBin := testutil.NeedTool(t, "OLLAMA")
	hfjsDir := testutil.NeedTool(t, "HFJS_DIR")
	dir := t.TempDir()

	// The real upstreams: a CNCF distribution registry, a fake
	// registry.ollama.ai, a fake hub.
	reg := startRegistry(t, tl)
	crane := func(args ...string) cmd { return command(tl.crane, args...) }
	oras := func(args ...string) cmd { return command(tl.oras, args...) }
	layer1, layer2 := filepath.Join(dir, "l1.tar"), filepath.Join(dir, "l2.tar")
	writeTar(t, layer1, map[string][]byte{"etc/hello.txt": []byte("hello from a tier\n")})
	writeTar(t, layer2, map[string][]byte{"opt/data.bin": randomBytes(t, 512<<10)})
	const hello, art = "library/hello:1", "team/art:v1"
	crane("append", "--insecure", "--oci-empty-base", "-f", layer1, "-f", layer2, "-t", reg.addr+"/"+hello).must(t)
	artData := []byte(fmt.Sprintf("an artifact %x\n", randomBytes(t, 16)))
	os.WriteFile(filepath.Join(dir, "art.txt"), artData, 0o644)
	oras("push", "--plain-http", reg.addr+"/"+art, "--artifact-type", "application/vnd.clowder.test", "art.txt:text/plain").inDir(dir).must(t)
	direct := map[string]string{}
	for _, ref := range []string{hello, art} {
		direct[ref] = strings.TrimSpace(crane("digest", "--insecure", reg.addr+"/"+ref).must(t))
	}
	helloManifest := parseManifest(t, hello, []byte(crane("manifest", "--insecure", reg.addr+"/"+hello).must(t)))
	helloBlobs := []string{helloManifest.Config.Digest}
	for _, l := range helloManifest.Layers {
		helloBlobs = append(helloBlobs, l.Digest)
	}

	o := testutil.NewOllamaRegistry(t)
	model := testutil.NewOllamaModel(2 << 20) // an 8 MiB GGUF
	o.Add("library/tiny:latest", model)

	hub := testutil.NewHub(t)
	commit := strings.Repeat("c", 40)
	hubFiles := map[string]testutil.HubFile{
		"config.json":         {Data: []byte(`{"model_type":"llama","hidden_size":64}`)},
		"README.md":           {Data: []byte("# Tiny\n")},
		"model.safetensors":   {Data: bytes.Repeat([]byte("weights!"), 300000), LFS: true},
		"tokenizer/vocab.txt": {Data: []byte("a\nb\nc\n")},
	}
	hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/Tiny", Refs: map[string]string{"main": commit}, Commits: map[string]map[string]testutil.HubFile{commit: hubFiles}})

	// The site: the only Clowder that talks to the upstreams; workers log in.
	const workerToken = "worker-token-0123456789"
	site := startTierClowder(t, tl, dir, "site", fmt.Sprintf(`
auth:
  tokens:
    - {user: worker, token: %q}
upstreams:
  - {name: docker.io, type: oci, url: 'http://%s', default: true, tag_ttl: 1h}
  - {name: registry.ollama.ai, type: ollama, url: '%s', tag_ttl: 1h}
  - {name: huggingface.co, type: huggingface, url: '%s', tag_ttl: 1h}
`, workerToken, reg.addr, o.Server.URL, hub.URL))
	workerCfg := func(siteAddr string) string {
		return fmt.Sprintf(`
upstreams:
  - {name: docker.io, type: oci, url: 'http://%[1]s/docker.io', default: true, tag_ttl: 0s, username: worker, password: %[2]q}
  - {name: registry.ollama.ai, type: ollama, url: 'http://%[1]s/registry.ollama.ai', tag_ttl: 0s, username: worker, password: %[2]q}
  - {name: huggingface.co, type: huggingface, url: 'http://%[1]s', tag_ttl: 0s, token: %[2]q}
`, siteAddr, workerToken)
	}
	w1 := startTierClowder(t, tl, dir, "worker1", workerCfg(site.addr))

	// pullAll pulls everything through worker w with real clients and
	// checks it against the direct pulls.
	hfDirect := runHFJS(t, hfjsDir, hub.URL, "Org/Tiny", "model.safetensors")
	weightSHA := testutil.SHA256(hubFiles["model.safetensors"].Data)
	cdnDirect := hub.CDNGets(weightSHA) // huggingface.js fetched it directly
	pullAll := func(t *testing.T, w *clowder) {
		t.Helper()
		for _, name := range []string{"hello:1", "library/hello:1", "docker.io/library/hello:1"} {
			checkDigest(t, crane("digest", "--insecure", w.addr+"/"+name), direct[hello])
		}
		tarball := filepath.Join(t.TempDir(), "hello.tar")
		if _, ok := crane("pull", "--insecure", w.addr+"/"+hello, tarball).should(t); ok {
			if fi, err := os.Stat(tarball); err != nil || fi.Size() < 512<<10 {
				t.Errorf("crane pull through %s: tarball %v, want the whole image", w.addr, err)
			}
		}
		out := t.TempDir()
		if _, ok := oras("pull", "--plain-http", "-o", out, w.addr+"/docker.io/"+art).should(t); ok {
			if b, err := os.ReadFile(filepath.Join(out, "art.txt")); err != nil || !bytes.Equal(b, artData) {
				t.Errorf("oras pull through %s: art.txt = %q, %v; want %q", w.addr, b, err, artData)
			}
		}
		// containerd's mirror form: ?ns=docker.io and the registry's own name.
		req, _ := http.NewRequest("GET", "http://"+w.addr+"/v2/library/hello/manifests/1?ns=docker.io", nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
		if resp, err := http.DefaultClient.Do(req); err != nil {
			t.Errorf("GET ?ns=docker.io: %v", err)
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != direct[hello] || sha256Digest(b) != direct[hello] {
				t.Errorf("GET /v2/library/hello/manifests/1?ns=docker.io through %s = %d %s, want 200 %s", w.addr, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), direct[hello])
			}
		}
		ollamaPull(t, ollamaBin, w.addr+"/library/tiny:latest", len(model.Blobs))
		if got := runHFJS(t, hfjsDir, "http://"+w.addr, "Org/Tiny", "model.safetensors"); fmt.Sprint(got) != fmt.Sprint(hfDirect) {
			t.Errorf("huggingface.js through %s = %v\nwant (direct) %v", w.addr, got, hfDirect)
		}
	}

	t.Run("cold", func(t *testing.T) {
		pullAll(t, w1)
		pullAll(t, w1) // warm on the worker: nothing more upstream
		for _, d := range helloBlobs {
			if n := reg.gets(t, "library/hello", "blobs", d); n != 1 {
				t.Errorf("registry GETs of blob %s = %d, want 1", d, n)
			}
		}
		for d := range model.Blobs {
			if full, ranged := o.StoreGets(d); full != 1 || ranged != 0 {
				t.Errorf("ollama object store GETs of %s = %d full, %d ranged; want 1, 0", d, full, ranged)
			}
		}
		if n := hub.CDNGets(weightSHA) - cdnDirect; n != 1 {
			t.Errorf("hub CDN GETs of model.safetensors through the tiers = %d, want 1", n)
		}
		if !strings.Contains(site.p.log(), `"path":"/token"`) {
			t.Errorf("the site's log shows no token request from the worker")
		}
		for _, c := range []*clowder{site, w1} {
			for _, name := range []string{"docker.io/" + hello, "registry.ollama.ai/library/tiny:latest", "huggingface.co/org/tiny:main"} {
				if _, err := layoutRef(t, c.root, name); err != nil {
					t.Errorf("%v", err)
				}
			}
		}
	})

	t.Run("upstreams-down-fresh-worker", func(t *testing.T) {
		reg.stop(t)
		o.Server.Close()
		o.Store.Close()
		hub.Server.Close()
		hub.CDN.Close()
		pullAll(t, startTierClowder(t, tl, dir, "worker2", workerCfg(site.addr)))
		// The site's plain URL with default: true: unprefixed names go to
		// the site's default upstream.
		plain := startTierClowder(t, tl, dir, "worker-plain", fmt.Sprintf(`
upstreams:
  - {name: docker.io, type: oci, url: 'http://%s', default: true, username: worker, password: %q}
`, site.addr, workerToken))
		for _, name := range []string{"hello:1", "docker.io/library/hello:1"} {
			checkDigest(t, crane("digest", "--insecure", plain.addr+"/"+name), direct[hello])
		}
	})

	t.Run("site-down-old-worker", func(t *testing.T) {
		site.p.stop()
		pullAll(t, w1)
	})
}

// startTierClowder writes a config (listen and root filled in) and starts
// a clowder on it.
func startTierClowder(t *testing.T, tl *tools, dir, name, body string) *clowder {
	t.Helper()
	cfg := filepath.Join(dir, name+".yaml")
	full := fmt.Sprintf("listen: 127.0.0.1:0\nroot: %s\n", filepath.Join(dir, name)) + body
	if err := os.WriteFile(cfg, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startClowder(t, tl, cfg, filepath.Join(dir, name+".log"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log, last lines:\n%s", name, tail(c.p.log(), 30))
		}
	})
	return c
}

// gets counts the registry's access-log lines for GET /v2/<repo>/<kind>/<ref>.
func (r *registry) gets(t *testing.T, repo, kind, ref string) int {
	t.Helper()
	b, err := os.ReadFile(r.p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), `"GET /v2/`+repo+"/"+kind+"/"+ref+" HTTP/")
}

// ollamaPull pulls ref with the real ollama client (a fresh ollama serve
// with empty model storage) and checks every blob it stored.
func ollamaPull(t *testing.T, bin, ref string, blobs int) {
	t.Helper()
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	models := filepath.Join(dir, "models")
	env := []string{"HOME=" + filepath.Join(dir, "home"), "OLLAMA_MODELS=" + models, "OLLAMA_HOST=" + addr}
	os.MkdirAll(filepath.Join(dir, "home"), 0o755)
	p := startProc(t, "ollama", filepath.Join(dir, "ollama.log"), command(bin, "serve").withEnv(env...))
	defer p.stop()
	for deadline := time.Now().Add(procStartTimeout); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("ollama serve did not come up:\n%s", tail(p.log(), 20))
		}
	}
	r := command(bin, "pull", "--insecure", ref).withEnv(env...).run(t)
	if r.err != nil || !strings.Contains(r.stdout+r.stderr, "success") {
		t.Errorf("%s", r)
		return
	}
	files, _ := filepath.Glob(filepath.Join(models, "blobs", "sha256-*"))
	if len(files) < blobs {
		t.Errorf("ollama pull %s: %d blobs stored, want %d", ref, len(files), blobs)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		h := sha256.Sum256(b)
		if got := "sha256-" + hex.EncodeToString(h[:]); err != nil || got != filepath.Base(f) {
			t.Errorf("ollama blob %s hashes to %s (%v)", filepath.Base(f), got, err)
		}
	}
}

// runHFJS downloads one file and a snapshot of repo with huggingface.js
// against hubURL (e2e/huggingface/hfjs.mjs): {file, snapshot} path -> sha256.
func runHFJS(t *testing.T, hfjsDir, hubURL, repo, file string) map[string]map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	x := exec.CommandContext(ctx, "node", filepath.Join("huggingface", "hfjs.mjs"))
	x.Env = append(os.Environ(), "HFJS_DIR="+hfjsDir, "HUB_URL="+hubURL, "HF_REPO="+repo, "HF_FILE="+file, "HF_CACHE="+t.TempDir())
	var stderr bytes.Buffer
	x.Stderr = &stderr
	start := time.Now()
	out, err := x.Output()
	t.Logf("$ HUB_URL=%s node huggingface/hfjs.mjs  # %s", hubURL, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Errorf("huggingface.js against %s: %v\n%s", hubURL, err, tail(stderr.String(), 20))
		return nil
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r map[string]map[string]string
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil || len(r["snapshot"]) == 0 {
		t.Errorf("huggingface.js output %q: %v", out, err)
	}
	return r
}
