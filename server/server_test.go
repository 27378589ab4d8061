package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/cas/s3store"
	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/internal/testutil/s3test"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/server"
	"github.com/clowder-dev/clowder/upstream"
	"github.com/clowder-dev/clowder/upstream/huggingface"
	"github.com/clowder-dev/clowder/upstream/oci"
	"github.com/clowder-dev/clowder/upstream/ollama"
)

type env struct {
	t      *testing.T
	root   string
	store  cas.Store
	filler *cas.Filler
	proxy  *proxy.Proxy
	srv    *httptest.Server
	host   string
}

type upSpec struct {
	name   string
	url    string
	def    bool
	ttl    time.Duration
	user   string
	pass   string
	ollama bool
	hf     bool
}

func newEnv(t *testing.T, ups ...upSpec) *env {
	t.Helper()
	return newEnvWith(t, proxy.Options{RevalidateTimeout: 2 * time.Second, UpstreamTimeout: 10 * time.Second}, ups...)
}

func newEnvWith(t *testing.T, popts proxy.Options, ups ...upSpec) *env {
	t.Helper()
	root := t.TempDir()
	store, filler, p := buildProxy(t, root, nil, popts, ups...)
	srv := httptest.NewServer(server.New(p, zerolog.Nop()))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &env{t: t, root: root, store: store, filler: filler, proxy: p, srv: srv, host: u.Host}
}

// onS3 reports whether the tests run on the s3 backend.
func onS3() bool { return os.Getenv("CLOWDER_TEST_STORE") == "s3" }

// testStore opens the store the tests run on: the layout at root, or with
// CLOWDER_TEST_STORE=s3 the s3 backend under a fresh key prefix (on
// CLOWDER_S3_* in make test-s3, else on the in-process fake), root its working area keeping every local copy (so
// tests that look at root/blobs see what they expect).
func testStore(t *testing.T, root string) cas.Store {
	t.Helper()
	if !onS3() {
		l, err := cas.OpenLayout(root)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ep := s3test.Get(t)
	s, err := s3store.New(context.Background(), s3store.Options{
		Endpoint: ep.URL, Bucket: s3test.Bucket, Region: "us-east-1",
		Prefix:    fmt.Sprintf("server-%d/", time.Now().UnixNano()),
		AccessKey: ep.AccessKey, SecretKey: ep.SecretKey,
		Root: root, LocalCacheSize: 1 << 40,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// buildProxy wires a store at root, a filler and a proxy over ups, every
// upstream client on transport (nil: each client's default).
func buildProxy(t *testing.T, root string, transport http.RoundTripper, popts proxy.Options, ups ...upSpec) (cas.Store, *cas.Filler, *proxy.Proxy) {
	t.Helper()
	store := testStore(t, root)
	var list []*upstream.Upstream
	for _, u := range ups {
		ttl := config.Duration(u.ttl)
		cu := config.Upstream{Name: u.name, Type: config.TypeOCI, URL: u.url, Default: u.def, TagTTL: &ttl, Username: u.user, Password: u.pass}
		opts := oci.Options{Name: u.name, Transport: transport}
		if u.user != "" {
			user, pass := u.user, u.pass
			opts.Credentials = func(string) (string, string, bool) { return user, pass, true }
		}
		if u.hf {
			cu.Type = config.TypeHuggingFace
			list = append(list, &upstream.Upstream{Upstream: cu})
			continue
		}
		newClient := oci.New
		if u.ollama {
			cu.Type = config.TypeOllama
			newClient = ollama.New
		}
		c, err := newClient(u.url, opts)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, &upstream.Upstream{Upstream: cu, Source: c})
	}
	filler := cas.NewFiller(store)
	filler.Backoff = 10 * time.Millisecond
	p := proxy.New(store, filler, upstream.NewRouter(list), popts)
	for _, up := range list {
		if up.Type == config.TypeHuggingFace {
			c, err := huggingface.New(up.URL, up.Token, transport, "clowder-test")
			if err != nil {
				t.Fatal(err)
			}
			h := proxy.NewHF(p, up, c)
			up.Source = h.Source()
			p.SetHF(h)
		}
	}
	return store, filler, p
}

// pull pulls ref through the proxy with go-containerregistry's client, reads
// every layer (verifying digests) and returns the image digest.
func (e *env) pull(ref string) (v1.Hash, error) {
	r, err := name.ParseReference(e.host+"/"+ref, name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := remote.Image(r)
	if err != nil {
		return v1.Hash{}, err
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return v1.Hash{}, err
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			return v1.Hash{}, err
		}
		if err := rc.Close(); err != nil {
			return v1.Hash{}, err
		}
	}
	if _, err := img.ConfigFile(); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

func (e *env) do(method, path string, hdr ...string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

func body(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ociCode(t *testing.T, b []byte) string {
	t.Helper()
	var eb struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(b, &eb); err != nil || len(eb.Errors) == 0 {
		t.Fatalf("error body %q is not an OCI error", b)
	}
	return eb.Errors[0].Code
}

func (e *env) names() map[string]ocispec.Descriptor {
	e.t.Helper()
	descs, err := e.store.List(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]ocispec.Descriptor{}
	for _, d := range descs {
		out[d.Annotations[ocispec.AnnotationRefName]] = d
	}
	return out
}

// waitBlobs waits (bounded) until blobs/ holds n files: a client has all
// bytes once Content-Length is reached, slightly before the commit.
func (e *env) waitBlobs(n int) []string {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		files := e.blobFiles()
		if len(files) == n || time.Now().After(deadline) {
			return files
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// blobFiles lists every file under blobs/ (and fails on temp files there).
func (e *env) blobFiles() []string {
	e.t.Helper()
	var out []string
	_ = filepath.Walk(filepath.Join(e.root, "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestPullThroughMissThenHit(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true})
	img := testutil.PushImage(t, reg.DirectHost, "test/img", "1", 3, 4096)
	want, _ := img.Digest()
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host, ttl: time.Hour})

	got, err := e.pull("up/test/img:1")
	if err != nil {
		t.Fatalf("cold pull: %v", err)
	}
	if got != want {
		t.Fatalf("cold pull digest = %s, want %s", got, want)
	}
	blobGets := reg.Count("GET blobs")
	if blobGets != 4 { // 3 layers + config
		t.Errorf("upstream blob GETs after cold pull = %d, want 4", blobGets)
	}
	if d, ok := e.names()["up/test/img:1"]; !ok || d.Digest.String() != want.String() {
		t.Errorf("index.json name up/test/img:1 = %v, want digest %s", d, want)
	} else if d.Annotations["io.containerd.image.name"] != "up/test/img:1" {
		t.Errorf("io.containerd.image.name = %q", d.Annotations["io.containerd.image.name"])
	}
	reg.ResetCounts()
	got, err = e.pull("up/test/img:1")
	if err != nil || got != want {
		t.Fatalf("warm pull = %s, %v; want %s", got, err, want)
	}
	if n := reg.Count("GET blobs") + reg.Count("GET manifests") + reg.Count("HEAD manifests"); n != 0 {
		t.Errorf("warm pull within tag_ttl sent %d upstream requests, want 0: %v", n, reg.Log())
	}
	// Strict reader: go-containerregistry's layout package reads the cache.
	assertLayoutValid(t, e.root, "up/test/img:1", want.String())
}

func TestTagMovedUpstreamRevalidatesWithHEAD(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img1 := testutil.PushImage(t, reg.DirectHost, "app", "latest", 1, 1024)
	d1, _ := img1.Digest()
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host, ttl: 0})
	if got, err := e.pull("up/app:latest"); err != nil || got != d1 {
		t.Fatalf("pull M1 = %s, %v", got, err)
	}
	// Unchanged tag: revalidation is a HEAD, no manifest GET.
	reg.ResetCounts()
	if got, err := e.pull("up/app:latest"); err != nil || got != d1 {
		t.Fatalf("repull M1 = %s, %v", got, err)
	}
	if g, h := reg.Count("GET manifests"), reg.Count("HEAD manifests"); g != 0 || h == 0 {
		t.Errorf("revalidating unchanged tag: %d GETs, %d HEADs; want 0 GETs and some HEADs", g, h)
	}
	img2 := testutil.PushImage(t, reg.DirectHost, "app", "latest", 1, 1024)
	d2, _ := img2.Digest()
	reg.ResetCounts()
	if got, err := e.pull("up/app:latest"); err != nil || got != d2 {
		t.Fatalf("pull after tag moved = %s, %v; want %s", got, err, d2)
	}
	if g := reg.Count("GET manifests"); g != 1 {
		t.Errorf("manifest GETs after the tag moved = %d, want 1 (by digest)", g)
	}
	// M1 stays pullable by digest, without the upstream.
	reg.SetDown(true)
	if got, err := e.pull("up/app@" + d1.String()); err != nil || got != d1 {
		t.Fatalf("pull M1 by digest with upstream down = %s, %v", got, err)
	}
}

func TestUpstreamDownServesCachedAnd502ForUncached(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true})
	img := testutil.PushImage(t, reg.DirectHost, "lib/x", "1", 2, 1024)
	want, _ := img.Digest()
	testutil.PushImage(t, reg.DirectHost, "lib/y", "1", 1, 1024)
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host, ttl: 0})
	if _, err := e.pull("up/lib/x:1"); err != nil {
		t.Fatal(err)
	}
	reg.SetDown(true)
	start := time.Now()
	if got, err := e.pull("up/lib/x:1"); err != nil || got != want {
		t.Fatalf("cached pull with upstream down = %s, %v", got, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cached pull with upstream down took %v", d)
	}
	resp := e.do("GET", "/v2/up/lib/y/manifests/1")
	b := body(t, resp)
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("uncached manifest with upstream down: status %d, want 502/503 (%s)", resp.StatusCode, b)
	}
	if c := ociCode(t, b); c == "" {
		t.Error("no OCI error code")
	}
}

func TestRateLimitedUpstream(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, reg.DirectHost, "a", "1", 1, 512)
	testutil.PushImage(t, reg.DirectHost, "b", "1", 1, 512)
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host, ttl: 0})
	if _, err := e.pull("up/a:1"); err != nil {
		t.Fatal(err)
	}
	reg.SetStatus(http.StatusTooManyRequests, "7")
	if _, err := e.pull("up/a:1"); err != nil {
		t.Fatalf("cached pull while upstream rate-limits: %v", err)
	}
	resp := e.do("GET", "/v2/up/b/manifests/1")
	b := body(t, resp)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("uncached while rate-limited: %d Retry-After=%q, want 429 with 7 (%s)", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if c := ociCode(t, b); c != "TOOMANYREQUESTS" {
		t.Errorf("code = %s, want TOOMANYREQUESTS", c)
	}
}

func TestNestedNamesExactTokenScope(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true, Username: "u", Password: "p"})
	testutil.PushImage(t, reg.DirectHost, "team/a/b/c", "1", 1, 512)
	testutil.PushImage(t, reg.DirectHost, "x/y", "1", 1, 512)
	e := newEnv(t, upSpec{name: "corp", url: "http://" + reg.Host, ttl: time.Hour, user: "u", pass: "p"})
	for _, ref := range []string{"corp/team/a/b/c:1", "corp/x/y:1"} {
		if _, err := e.pull(ref); err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if _, ok := e.names()[ref]; !ok {
			t.Errorf("%s not named in index.json", ref)
		}
	}
	// One token per repository scope, reused while valid.
	if n := reg.TokenRequests(); n != 2 {
		t.Errorf("token requests = %d, want 2 (one per scope)", n)
	}
}

func TestWrongCredentialsAreNotA500(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true, Username: "u", Password: "p"})
	testutil.PushImage(t, reg.DirectHost, "x", "1", 1, 512)
	e := newEnv(t, upSpec{name: "corp", url: "http://" + reg.Host, user: "u", pass: "wrong"})
	resp := e.do("GET", "/v2/corp/x/manifests/1")
	b := body(t, resp)
	if resp.StatusCode >= 500 || resp.StatusCode < 400 {
		t.Fatalf("status %d (%s), want a 4xx", resp.StatusCode, b)
	}
}

func TestIndexHeadOnlyIsPersisted(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	idx := testutil.PushIndex(t, reg.DirectHost, "multi", "t")
	idxDigest, _ := idx.Digest()
	im, _ := idx.IndexManifest()
	a, b := im.Manifests[0], im.Manifests[1]
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host, ttl: time.Hour})

	accept := strings.Join(oci.ManifestAccept, ", ")
	resp := e.do("HEAD", "/v2/up/multi/manifests/t", "Accept", accept)
	body(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != idxDigest.String() ||
		resp.Header.Get("Content-Type") != string(im.MediaType) || resp.ContentLength <= 0 {
		t.Fatalf("HEAD index: %d %v", resp.StatusCode, resp.Header)
	}
	headLen := resp.ContentLength
	// The client fetches only its platform's child.
	resp = e.do("GET", "/v2/up/multi/manifests/"+a.Digest.String(), "Accept", accept)
	if b := body(t, resp); resp.StatusCode != 200 {
		t.Fatalf("GET child A: %d %s", resp.StatusCode, b)
	}
	reg.SetDown(true)
	for _, ref := range []string{idxDigest.String(), "t"} {
		resp = e.do("GET", "/v2/up/multi/manifests/"+ref, "Accept", accept)
		got := body(t, resp)
		if resp.StatusCode != 200 || digest.FromBytes(got).String() != idxDigest.String() || int64(len(got)) != headLen {
			t.Errorf("GET index %s with upstream down: %d, digest %s", ref, resp.StatusCode, digest.FromBytes(got))
		}
		if resp.Header.Get("Content-Type") != string(im.MediaType) {
			t.Errorf("GET index %s Content-Type = %q, want %q", ref, resp.Header.Get("Content-Type"), im.MediaType)
		}
	}
	resp = e.do("GET", "/v2/up/multi/manifests/"+b.Digest.String(), "Accept", accept)
	bb := body(t, resp)
	if resp.StatusCode != 502 && resp.StatusCode != 503 {
		t.Errorf("uncached child B with upstream down: %d, want 502/503", resp.StatusCode)
	}
	ociCode(t, bb)
	if _, ok := e.names()["up/multi@"+a.Digest.String()]; !ok {
		t.Errorf("child fetched by digest not named up/multi@%s: %v", a.Digest, e.names())
	}
}

func TestManifestHeadMatchesGet(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, reg.DirectHost, "library/alpine", "3.12", 1, 256)
	e := newEnv(t, upSpec{name: "docker.io", url: "http://" + reg.Host, def: true, ttl: time.Hour})
	accept := strings.Join(oci.ManifestAccept, ", ")
	var prev http.Header
	for i, m := range []string{"HEAD", "GET", "HEAD", "GET"} {
		// "alpine" is Docker Hub's library/alpine via the default upstream.
		resp := e.do(m, "/v2/alpine/manifests/3.12", "Accept", accept)
		b := body(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%s #%d: %d %s", m, i, resp.StatusCode, b)
		}
		if m == "GET" && digest.FromBytes(b).String() != resp.Header.Get("Docker-Content-Digest") {
			t.Errorf("GET body digest %s != header %s", digest.FromBytes(b), resp.Header.Get("Docker-Content-Digest"))
		}
		h := http.Header{}
		for _, k := range []string{"Content-Type", "Content-Length", "Docker-Content-Digest"} {
			if resp.Header.Get(k) == "" {
				t.Errorf("%s #%d: no %s", m, i, k)
			}
			h.Set(k, resp.Header.Get(k))
		}
		if prev != nil && fmt.Sprint(prev) != fmt.Sprint(h) {
			t.Errorf("%s #%d headers %v differ from previous %v", m, i, h, prev)
		}
		prev = h
	}
	if _, ok := e.names()["docker.io/library/alpine:3.12"]; !ok {
		t.Errorf("name docker.io/library/alpine:3.12 missing: %v", e.names())
	}
}

func TestNamespaceRouting(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, reg.DirectHost, "library/busybox", "1", 1, 256)
	testutil.PushImage(t, reg.DirectHost, "org/tool", "2", 1, 256)
	e := newEnv(t,
		upSpec{name: "docker.io", url: "http://" + reg.Host, ttl: time.Hour},
		upSpec{name: "ghcr.io", url: "http://" + reg.Host, ttl: time.Hour},
	)
	cases := []struct {
		path   string
		status int
		code   string
		ns     string
		named  string
	}{
		{"/v2/busybox/manifests/1?ns=docker.io", 200, "", "docker.io", "docker.io/library/busybox:1"},
		{"/v2/library/busybox/manifests/1?ns=registry-1.docker.io", 200, "", "registry-1.docker.io", ""},
		{"/v2/org/tool/manifests/2?ns=ghcr.io", 200, "", "ghcr.io", "ghcr.io/org/tool:2"},
		{"/v2/org/tool/manifests/2?ns=quay.io", 404, "NAME_UNKNOWN", "", ""},
		{"/v2/org/tool/manifests/2", 404, "NAME_UNKNOWN", "", ""}, // no default upstream
		{"/v2/ghcr.io/org/tool/manifests/2", 200, "", "", ""},
	}
	for _, c := range cases {
		resp := e.do("GET", c.path)
		b := body(t, resp)
		if resp.StatusCode != c.status {
			t.Errorf("GET %s = %d, want %d (%s)", c.path, resp.StatusCode, c.status, b)
			continue
		}
		if c.code != "" && ociCode(t, b) != c.code {
			t.Errorf("GET %s code = %s, want %s", c.path, ociCode(t, b), c.code)
		}
		if got := resp.Header.Get("OCI-Namespace"); got != c.ns {
			t.Errorf("GET %s OCI-Namespace = %q, want %q", c.path, got, c.ns)
		}
		if c.named != "" {
			if _, ok := e.names()[c.named]; !ok {
				t.Errorf("GET %s: %s not named", c.path, c.named)
			}
		}
	}
}

func TestBlobRanges(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img := testutil.PushImage(t, reg.DirectHost, "r", "1", 1, 100000)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	rc, _ := layers[0].Compressed()
	full, _ := io.ReadAll(rc)
	size := int64(len(full))
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host})
	path := "/v2/up/r/blobs/" + ld.String()
	for round := range 2 { // cold, then warm
		resp := e.do("HEAD", path)
		body(t, resp)
		if resp.StatusCode != 200 || resp.ContentLength != size || resp.Header.Get("Docker-Content-Digest") != ld.String() || resp.Header.Get("Accept-Ranges") != "bytes" {
			t.Fatalf("round %d HEAD blob: %d len %d %v", round, resp.StatusCode, resp.ContentLength, resp.Header)
		}
		for _, c := range []struct {
			rng        string
			status     int
			start, end int64
		}{
			{"bytes=10-99", 206, 10, 99},
			{"bytes=0-0", 206, 0, 0},
			{fmt.Sprintf("bytes=%d-", size-5), 206, size - 5, size - 1},
			{"bytes=-7", 206, size - 7, size - 1},
			{fmt.Sprintf("bytes=100-%d", size+100), 206, 100, size - 1},
			{fmt.Sprintf("bytes=%d-", size), 416, 0, 0},
			{"bytes=5-2", 416, 0, 0},
			{"bytes=0-1,5-6", 416, 0, 0},
			{"bytes=abc", 416, 0, 0},
			{"items=0-1", 416, 0, 0},
		} {
			resp := e.do("GET", path, "Range", c.rng)
			b := body(t, resp)
			if resp.StatusCode != c.status {
				t.Errorf("round %d Range %q = %d, want %d", round, c.rng, resp.StatusCode, c.status)
				continue
			}
			if c.status == 416 {
				if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", size) {
					t.Errorf("Range %q: Content-Range %q", c.rng, cr)
				}
				continue
			}
			if want := full[c.start : c.end+1]; string(b) != string(want) {
				t.Errorf("round %d Range %q: wrong bytes (%d bytes)", round, c.rng, len(b))
			}
			if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", c.start, c.end, size) {
				t.Errorf("Range %q: Content-Range %q", c.rng, cr)
			}
		}
	}
	if n := reg.Count("GET blobs"); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
}

func TestBadInput(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, reg.DirectHost, "ok", "1", 1, 256)
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host, def: true})
	sha := "sha256:" + strings.Repeat("a", 64)
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/up/../etc/manifests/1", 400, "NAME_INVALID"},
		{"GET", "/v2/up/%2e%2e/x/manifests/1", 400, "NAME_INVALID"},
		{"GET", "/v2/up/UPPER/manifests/1", 400, "NAME_INVALID"},
		{"GET", "/v2/up/a//b/manifests/1", 400, "NAME_INVALID"},
		{"GET", "/v2/up/ok/manifests/bad:tag:x", 400, "DIGEST_INVALID"},
		{"GET", "/v2/up/ok/manifests/-tag", 400, "MANIFEST_INVALID"},
		{"GET", "/v2/up/ok/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "UNSUPPORTED"},
		{"GET", "/v2/up/ok/blobs/sha256:abc", 400, "DIGEST_INVALID"},
		{"GET", "/v2/up/ok/blobs/sha256:" + strings.Repeat("A", 64), 400, "DIGEST_INVALID"},
		{"GET", "/v2/up/ok/blobs/sha256:../../../../etc/passwd", 404, "UNSUPPORTED"},
		{"GET", "/v2/up/ok/blobs/sha256:..%2f..%2fetc%2fpasswd", 404, "UNSUPPORTED"},
		{"GET", "/v2/up/ok/blobs/sha256:%2e%2e", 400, "DIGEST_INVALID"},
		{"GET", "/v2/up/ok/blobs/" + sha, 404, "BLOB_UNKNOWN"},
		{"GET", "/v2/up/ok/manifests/" + sha, 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/up/ok/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/up/ok/tags/list?n=99999999999999999999", 400, "PAGINATION_NUMBER_INVALID"},
		{"GET", "/v2/up/ok/tags/list?n=-1", 400, "PAGINATION_NUMBER_INVALID"},
		{"GET", "/v2/up/ok/tags/list?n=x", 400, "PAGINATION_NUMBER_INVALID"},
		{"PUT", "/v2/up/ok/manifests/1", 405, "UNSUPPORTED"},
		{"GET", "/v2/up/ok/referrers/md5:00", 400, "UNSUPPORTED"},
		{"GET", "/v2/up/ok/referrers/sha256:xyz", 400, "DIGEST_INVALID"},
		{"GET", "/v2/nothing", 404, "UNSUPPORTED"},
	}
	before := len(e.blobFiles())
	namesBefore := len(e.names())
	for _, c := range cases {
		resp := e.do(c.method, c.path)
		b := body(t, resp)
		if resp.StatusCode != c.status {
			t.Errorf("%s %s = %d, want %d (%s)", c.method, c.path, resp.StatusCode, c.status, b)
			continue
		}
		if got := ociCode(t, b); got != c.code {
			t.Errorf("%s %s code = %s, want %s", c.method, c.path, got, c.code)
		}
	}
	if after := len(e.blobFiles()); after != before {
		t.Errorf("bad input wrote %d blob files", after-before)
	}
	if after := len(e.names()); after != namesBefore {
		t.Errorf("bad input added %d names", after-namesBefore)
	}
	// Huge but valid n is clamped, not refused.
	resp := e.do("GET", "/v2/up/ok/tags/list?n=100000")
	if b := body(t, resp); resp.StatusCode != 200 || !strings.Contains(string(b), `"1"`) {
		t.Errorf("tags/list?n=100000 = %d %s", resp.StatusCode, b)
	}
}

func TestTagsListPaginationAndCacheFallback(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	for _, tag := range []string{"a", "b", "c"} {
		testutil.PushImage(t, reg.DirectHost, "repo", tag, 1, 128)
	}
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host})
	resp := e.do("GET", "/v2/up/repo/tags/list?n=2")
	b := body(t, resp)
	if resp.StatusCode != 200 || string(b) != `{"name":"up/repo","tags":["a","b"]}` {
		t.Fatalf("tags n=2: %d %s", resp.StatusCode, b)
	}
	if l := resp.Header.Get("Link"); l != `</v2/up/repo/tags/list?last=b&n=2>; rel="next"` {
		t.Errorf("Link = %q", l)
	}
	resp = e.do("GET", "/v2/up/repo/tags/list?n=2&last=b")
	if b := body(t, resp); string(b) != `{"name":"up/repo","tags":["c"]}` || resp.Header.Get("Link") != "" {
		t.Errorf("tags page 2: %s Link=%q", b, resp.Header.Get("Link"))
	}
	// Cache fallback: with the upstream down, the cached tags answer.
	if _, err := e.pull("up/repo:b"); err != nil {
		t.Fatal(err)
	}
	reg.SetDown(true)
	resp = e.do("GET", "/v2/up/repo/tags/list")
	if b := body(t, resp); resp.StatusCode != 200 || string(b) != `{"name":"up/repo","tags":["b"]}` {
		t.Errorf("tags from cache: %d %s", resp.StatusCode, b)
	}
}

func TestBaseEndpoint(t *testing.T) {
	e := newEnv(t)
	resp := e.do("GET", "/v2/")
	b := body(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" || string(b) != "{}" {
		t.Errorf("GET /v2/ = %d %v %s", resp.StatusCode, resp.Header, b)
	}
}

// The token server fails: cached names are still served, uncached ones get
// a 5xx with an OCI error body, never a 404 or a 500.
func TestTokenServerDown(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true})
	testutil.PushImage(t, reg.DirectHost, "x", "1", 1, 512)
	testutil.PushImage(t, reg.DirectHost, "y", "1", 1, 512)
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host, ttl: 0})
	if _, err := e.pull("up/x:1"); err != nil {
		t.Fatal(err)
	}
	reg.SetTokenStatus(http.StatusInternalServerError)
	// A new process would hold no token: force a fresh challenge.
	e2 := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host, ttl: 0})
	_ = e2
	if _, err := e.pull("up/x:1"); err != nil {
		t.Errorf("cached pull with the token server down: %v", err)
	}
	resp := e2.do("GET", "/v2/up/y/manifests/1")
	b := body(t, resp)
	if resp.StatusCode != 502 && resp.StatusCode != 503 {
		t.Errorf("uncached with the token server down = %d %s, want 502/503", resp.StatusCode, b)
	}
	ociCode(t, b)
}

func TestManifestOver4MiBRefused(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	big := append([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":"`), bytes.Repeat([]byte("a"), 5<<20)...)
	big = append(big, []byte(`"}}`)...)
	reg.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/manifests/big") {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Write(big)
			return true
		}
		return false
	})
	e := newEnv(t, upSpec{name: "up", url: "http://" + reg.Host})
	resp := e.do("GET", "/v2/up/r/manifests/big")
	b := body(t, resp)
	if resp.StatusCode < 400 || resp.StatusCode == 500 || ociCode(t, b) != "MANIFEST_INVALID" {
		t.Errorf("5 MiB manifest = %d %s, want a MANIFEST_INVALID refusal", resp.StatusCode, b)
	}
	if len(e.blobFiles()) != 0 || len(e.names()) != 0 {
		t.Errorf("a refused manifest was stored")
	}
}
