package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/server"
	"github.com/clowder-dev/clowder/upstream"
)

// Tiers: a worker Clowder whose upstreams are a site Clowder's, named by
// the URL path (http://site/docker.io). The site is the only one that talks
// to the real upstream; once it holds content, it serves it alone.

func TestTierOCI(t *testing.T) {
	hub := testutil.NewRegistry(t, testutil.RegistryOptions{})
	ghcr := testutil.NewRegistry(t, testutil.RegistryOptions{})
	alpine := testutil.PushImage(t, hub.DirectHost, "library/alpine", "3.20", 2, 64<<10)
	tool := testutil.PushImage(t, ghcr.DirectHost, "org/tool", "1", 1, 32<<10)
	// The same repository name on the other registry, different content: a
	// worker must get the one its upstream's prefix names.
	testutil.PushImage(t, ghcr.DirectHost, "library/alpine", "3.20", 1, 1024)
	wantAlpine, _ := alpine.Digest()
	wantTool, _ := tool.Digest()

	site := newEnv(t,
		upSpec{name: "docker.io", url: "http://" + hub.Host, def: true, ttl: time.Hour},
		upSpec{name: "ghcr.io", url: "http://" + ghcr.Host, ttl: time.Hour})
	worker := func() *env {
		return newEnv(t,
			upSpec{name: "docker.io", url: site.srv.URL + "/docker.io", def: true},
			upSpec{name: "ghcr.io", url: site.srv.URL + "/ghcr.io"})
	}
	w1 := worker()
	for ref, want := range map[string]string{
		"alpine:3.20":                                     wantAlpine.String(),
		"library/alpine:3.20":                             wantAlpine.String(),
		"docker.io/library/alpine:3.20":                   wantAlpine.String(),
		"ghcr.io/org/tool:1":                              wantTool.String(),
		"docker.io/library/alpine@" + wantAlpine.String(): wantAlpine.String(),
	} {
		got, err := w1.pull(ref)
		if err != nil || got.String() != want {
			t.Fatalf("pull %s through the worker = %v, %v; want %s", ref, got, err, want)
		}
	}
	// containerd's mirror form: ?ns=docker.io with the registry's own name.
	resp := w1.do("GET", "/v2/library/alpine/manifests/3.20?ns=docker.io", "Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	body(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != wantAlpine.String() {
		t.Errorf("GET ?ns=docker.io through the worker = %d %s, want 200 %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), wantAlpine)
	}
	// tags/list goes through both tiers.
	resp = w1.do("GET", "/v2/docker.io/library/alpine/tags/list")
	if b := body(t, resp); resp.StatusCode != 200 || !strings.Contains(string(b), `"3.20"`) {
		t.Errorf("tags/list through the worker = %d %s", resp.StatusCode, b)
	}
	// Both tiers name the content alike.
	for _, e := range []*env{site, w1} {
		if d, ok := e.names()["docker.io/library/alpine:3.20"]; !ok || d.Digest.String() != wantAlpine.String() {
			t.Errorf("docker.io/library/alpine:3.20 in index.json = %v (held %v), want %s", d.Digest, ok, wantAlpine)
		}
	}
	blobs := hub.Count("GET blobs")
	if blobs != 3 {
		t.Errorf("upstream blob GETs = %d, want 3 (config and two layers, once each)", blobs)
	}

	// A fresh worker is served by the site alone.
	manifests := hub.Count("GET manifests") + hub.Count("HEAD manifests")
	hub.SetDown(true)
	if got, err := worker().pull("alpine:3.20"); err != nil || got != wantAlpine {
		t.Fatalf("pull through a fresh worker, upstream down = %v, %v; want %s", got, err, wantAlpine)
	}
	if n := hub.Count("GET blobs"); n != blobs {
		t.Errorf("upstream blob GETs after the second worker = %d, want %d", n, blobs)
	}
	if n := hub.Count("GET manifests") + hub.Count("HEAD manifests"); n != manifests {
		t.Errorf("upstream manifest requests after the second worker = %d, want %d (the site's tag_ttl holds)", n, manifests)
	}

	// The old worker, with the site gone too: its own cache.
	site.srv.Close()
	if got, err := w1.pull("alpine:3.20"); err != nil || got != wantAlpine {
		t.Fatalf("pull through the first worker, site down = %v, %v; want %s", got, err, wantAlpine)
	}
}

// A worker Clowder is one client to its site: past the site's
// max_fills_per_client its fill is told to come back (429, Retry-After), and
// it waits and retries instead of failing its own client's pull.
func TestTierWorkerWaitsOutSiteFillCap(t *testing.T) {
	defer server.SetRetryAfterTooManyFills("1")()
	up := newSlowBlobs(t, 2)
	site := newEnvWith(t, proxy.Options{MaxFillsPerClient: 1, RevalidateTimeout: 2 * time.Second, UpstreamTimeout: 10 * time.Second},
		upSpec{name: "up", url: up.srv.URL, def: true})
	worker := newEnv(t, upSpec{name: "up", url: site.srv.URL + "/up", def: true})
	ds := up.digests()
	first, err := http.Get(worker.srv.URL + "/v2/up/x/blobs/" + ds[0].String())
	if err != nil || first.StatusCode != 200 {
		t.Fatalf("first cold blob through the worker: %v %v", first, err)
	}
	defer first.Body.Close()
	// The site now runs one fill for the worker: the second is refused
	// until it ends.
	type result struct {
		status int
		n      int
		took   time.Duration
	}
	second := make(chan result, 1)
	go func() {
		start := time.Now()
		resp, err := http.Get(worker.srv.URL + "/v2/up/x/blobs/" + ds[1].String())
		if err != nil {
			second <- result{status: -1}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		second <- result{resp.StatusCode, len(b), time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond)
	up.free()
	if b, err := io.ReadAll(first.Body); err != nil || len(b) != 1000 {
		t.Fatalf("first blob: %d bytes, %v", len(b), err)
	}
	r := <-second
	if r.status != 200 || r.n != 1000 {
		t.Fatalf("second cold blob through the worker = %d (%d bytes), want 200 once the site's fill cap frees", r.status, r.n)
	}
	if r.took < 900*time.Millisecond {
		t.Errorf("second blob after %v: want it to have waited out the site's Retry-After (1 s)", r.took)
	}
}

// With the site's plain URL (no path) and default: true, unprefixed names
// pass to the site's default upstream.
func TestTierPlainURLDefault(t *testing.T) {
	hub := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img := testutil.PushImage(t, hub.DirectHost, "library/alpine", "3.20", 1, 4096)
	want, _ := img.Digest()
	site := newEnv(t, upSpec{name: "docker.io", url: "http://" + hub.Host, def: true})
	w := newEnv(t, upSpec{name: "docker.io", url: site.srv.URL, def: true})
	for _, ref := range []string{"alpine:3.20", "docker.io/library/alpine:3.20"} {
		if got, err := w.pull(ref); err != nil || got != want {
			t.Errorf("pull %s through the worker (plain site URL) = %v, %v; want %s", ref, got, err, want)
		}
	}
}

func TestTierOllama(t *testing.T) {
	o := testutil.NewOllamaRegistry(t)
	m := testutil.NewOllamaModel(200000)
	o.Add("library/m:t", m)
	site := newEnv(t, upSpec{name: "registry.ollama.ai", url: o.Server.URL, ollama: true, ttl: time.Hour})
	worker := func() *env {
		return newEnv(t, upSpec{name: "registry.ollama.ai", url: site.srv.URL + "/registry.ollama.ai", ollama: true})
	}
	// What the ollama client does, against a worker.
	pull := func(e *env) error {
		resp := e.doUA("GET", "/v2/library/m/manifests/t", ollamaUA, "Accept", "application/vnd.docker.distribution.manifest.v2+json")
		b := body(t, resp)
		if resp.StatusCode != 200 || !bytes.Equal(b, m.Manifest) {
			return fmt.Errorf("manifest = %d, %d bytes (%s), want the upstream's %d bytes", resp.StatusCode, len(b), b, len(m.Manifest))
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.docker.distribution.manifest.v2+json" {
			return fmt.Errorf("manifest Content-Type %q", ct)
		}
		for d, want := range m.Blobs {
			p := "/v2/library/m/blobs/" + d.String()
			resp := e.doUA("HEAD", p, ollamaUA)
			body(t, resp)
			if resp.StatusCode != 200 || resp.ContentLength != int64(len(want)) {
				return fmt.Errorf("HEAD %s = %d, length %d, want %d", p, resp.StatusCode, resp.ContentLength, len(want))
			}
			resp = e.doUA("GET", p, ollamaUA)
			b := body(t, resp)
			loc := resp.Header.Get("Location")
			if resp.StatusCode != 200 || loc == "" || !bytes.Equal(b, want) {
				return fmt.Errorf("GET %s = %d, Location %q, right bytes %v", p, resp.StatusCode, loc, bytes.Equal(b, want))
			}
			// A ranged part at Location, with Go's default User-Agent.
			resp = e.doUA("GET", loc, "Go-http-client/1.1", "Range", "bytes=1-2")
			if b := body(t, resp); resp.StatusCode != 206 || !bytes.Equal(b, want[1:3]) {
				return fmt.Errorf("ranged GET %s = %d %q, want 206 %q", loc, resp.StatusCode, b, want[1:3])
			}
		}
		return nil
	}
	w1 := worker()
	if err := pull(w1); err != nil {
		t.Fatalf("ollama pull through the worker: %v", err)
	}
	for d := range m.Blobs {
		if full, ranged := o.StoreGets(d); full != 1 || ranged != 0 {
			t.Errorf("object store GETs of %s: %d full, %d ranged; want 1, 0", d, full, ranged)
		}
	}
	o.Server.Close()
	o.Store.Close()
	if err := pull(worker()); err != nil {
		t.Fatalf("ollama pull through a fresh worker, upstream down: %v", err)
	}
	site.srv.Close()
	if err := pull(w1); err != nil {
		t.Fatalf("ollama pull through the first worker, site down: %v", err)
	}
	if d, ok := w1.names()["registry.ollama.ai/library/m:t"]; !ok || d.Digest != digest.FromBytes(m.Manifest) {
		t.Errorf("worker names registry.ollama.ai/library/m:t = %v (held %v)", d.Digest, ok)
	}
}

func TestTierHuggingFace(t *testing.T) {
	f := newHubFixture(t)
	site := hfEnv(t, f)
	worker := func() *env {
		// tag_ttl 0: the worker asks the site on every request.
		return newEnv(t, upSpec{name: "huggingface.co", url: site.srv.URL, hf: true})
	}
	files := map[string][]byte{"config.json": f.config, "README.md": f.readme, "model.safetensors": f.weight, "tiny.Q4.gguf": f.gguf, "tokenizer/vocab.txt": f.nested}
	get := func(e *env, what string) error {
		// Repo info by revision, as snapshot_download starts.
		resp := e.do("GET", "/api/models/Org/Tiny/revision/main")
		b := body(t, resp)
		var info struct {
			SHA string `json:"sha"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &info) != nil || info.SHA != commitA {
			return fmt.Errorf("%s: repo info = %d %s, want sha %s", what, resp.StatusCode, b, commitA)
		}
		// The recursive tree, page by page: each Link points at the worker.
		var tree []byte
		for next := e.srv.URL + "/api/models/Org/Tiny/tree/" + commitA + "?recursive=true"; next != ""; {
			if !strings.HasPrefix(next, e.srv.URL+"/") {
				return fmt.Errorf("%s: tree Link %q does not point at the worker", what, next)
			}
			resp = e.do("GET", strings.TrimPrefix(next, e.srv.URL))
			b := body(t, resp)
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s: tree page %s = %d %s", what, next, resp.StatusCode, b)
			}
			tree = append(tree, b...)
			next = upstream.LinkNext(resp.Header.Get("Link"))
		}
		if !strings.Contains(string(tree), `"tokenizer/vocab.txt"`) || !strings.Contains(string(tree), testutil.SHA256(f.weight)) {
			return fmt.Errorf("%s: tree = %s, want every file, LFS oids included", what, tree)
		}
		for p, want := range files {
			for _, rev := range []string{"main", commitA} {
				path := "/Org/Tiny/resolve/" + rev + "/" + p
				resp := e.do("HEAD", path, "Accept-Encoding", "identity")
				body(t, resp)
				etag := testutil.GitSHA1(want)
				if p == "model.safetensors" || p == "tiny.Q4.gguf" {
					etag = testutil.SHA256(want)
				}
				if resp.StatusCode != 200 || resp.Header.Get("X-Repo-Commit") != commitA || resp.Header.Get("ETag") != `"`+etag+`"` || resp.ContentLength != int64(len(want)) {
					return fmt.Errorf("%s: HEAD %s = %d, X-Repo-Commit %q, ETag %q, length %d", what, path, resp.StatusCode, resp.Header.Get("X-Repo-Commit"), resp.Header.Get("ETag"), resp.ContentLength)
				}
				resp = e.do("GET", path)
				if b := body(t, resp); resp.StatusCode != 200 || !bytes.Equal(b, want) {
					return fmt.Errorf("%s: GET %s = %d, %d bytes, want %d", what, path, resp.StatusCode, len(b), len(want))
				}
			}
		}
		return nil
	}
	w1 := worker()
	if err := get(w1, "worker"); err != nil {
		t.Fatal(err)
	}
	if err := get(worker(), "second worker"); err != nil {
		t.Fatal(err)
	}
	for _, lfs := range [][]byte{f.weight, f.gguf} {
		if n := f.hub.CDNGets(testutil.SHA256(lfs)); n != 1 {
			t.Errorf("CDN GETs of an LFS file = %d, want 1", n)
		}
	}
	// The site alone: hub and CDN gone, a fresh worker (revision main
	// included: the site learned it from the repo info it relayed).
	f.hub.Server.Close()
	f.hub.CDN.Close()
	if err := get(worker(), "fresh worker, hub down"); err != nil {
		t.Fatal(err)
	}
	site.srv.Close()
	if err := get(w1, "first worker, site down"); err != nil {
		t.Fatal(err)
	}
}

// A site with client authentication: the worker's upstream username and
// password go through the site's token flow (401, /token with Basic, Bearer).
func TestTierSiteAuth(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img := testutil.PushImage(t, reg.DirectHost, "team/app", "1", 2, 4096)
	want, _ := img.Digest()
	site := newAuthEnv(t, false, upSpec{name: "up", url: "http://" + reg.Host, ttl: time.Hour})
	w := newEnv(t, upSpec{name: "up", url: site.srv.URL + "/up", def: true, user: "alice", pass: "alice-pw"})
	if got, err := w.pull("team/app:1"); err != nil || got != want {
		t.Fatalf("pull through the worker with credentials = %v, %v; want %s", got, err, want)
	}
	bad := newEnv(t, upSpec{name: "up", url: site.srv.URL + "/up", def: true, user: "alice", pass: "wrong"})
	if _, err := bad.pull("team/app:1"); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("pull through a worker with a wrong password = %v, want UNAUTHORIZED", err)
	}
	anon := newEnv(t, upSpec{name: "up", url: site.srv.URL + "/up", def: true})
	if _, err := anon.pull("team/app:1"); err == nil {
		t.Error("pull through a worker without credentials succeeded, want it refused")
	}
}
