package server_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/clowder-dev/clowder/hosted"
	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/server"
	"github.com/clowder-dev/clowder/upstream"
)

// guardedEnv is an env wired like clowder serve: every upstream client goes
// through the SSRF guard built from the upstreams' URLs and allow, and
// hosted repositories are served under "local".
type guardedEnv struct {
	*env
	hs *hosted.Store
}

func newGuardedEnv(t *testing.T, root string, allow []string, popts proxy.Options, ups ...upSpec) *guardedEnv {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	var urls []string
	for _, u := range ups {
		urls = append(urls, u.url)
	}
	guard, err := upstream.NewGuard(urls, allow)
	if err != nil {
		t.Fatal(err)
	}
	if popts.RevalidateTimeout == 0 {
		popts.RevalidateTimeout = 2 * time.Second
	}
	if popts.UpstreamTimeout == 0 {
		popts.UpstreamTimeout = 10 * time.Second
	}
	store, filler, p := buildProxy(t, root, guard.Transport(upstream.NewTransport()), popts, ups...)
	hs, err := hosted.Open(store, root, "local")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(p, zerolog.Nop(), server.Options{Hosted: hs}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &guardedEnv{env: &env{t: t, root: root, store: store, filler: filler, proxy: p, srv: srv, host: u.Host}, hs: hs}
}

// front serves target from 127.0.0.2, so that hosts target names in
// redirects and realms (127.0.0.1) are not the configured upstream's host.
func front(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no second loopback address here: %v", err)
	}
	tu, _ := url.Parse(target)
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(tu))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// ssrfRefused asserts a 502 with an OCI (or hub) error body that names the guard.
func ssrfRefused(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	b := body(t, resp)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "SSRF guard") || !strings.Contains(string(b), "allow_private_hosts") {
		t.Fatalf("%s = %d %s; want 502 naming the SSRF guard", what, resp.StatusCode, b)
	}
}

// A token realm on a private address that is neither the upstream's host
// nor allowed is refused (502, OCI body, no token request); allowed, it works.
func TestSSRFTokenRealm(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true}) // realm: 127.0.0.1, another port
	testutil.PushImage(t, reg.DirectHost, "lib/img", "1", 1, 512)
	up := front(t, reg.Server.URL)

	e := newGuardedEnv(t, "", nil, proxy.Options{}, upSpec{name: "reg", url: up, def: true})
	resp := e.do("GET", "/v2/reg/lib/img/manifests/1")
	b := body(t, resp)
	if resp.StatusCode != http.StatusBadGateway || ociCode(t, b) != "UNAVAILABLE" || !strings.Contains(string(b), "SSRF guard") || !strings.Contains(string(b), "127.0.0.1") {
		t.Fatalf("manifest behind a realm on 127.0.0.1 (upstream 127.0.0.2) = %d %s; want 502 UNAVAILABLE naming the guard and the host", resp.StatusCode, b)
	}
	if n := reg.TokenRequests(); n != 0 {
		t.Fatalf("token server got %d requests past the guard", n)
	}
	if len(e.blobFiles()) != 0 {
		t.Fatal("something was stored")
	}

	allowed := newGuardedEnv(t, "", []string{"127.0.0.1"}, proxy.Options{}, upSpec{name: "reg", url: up, def: true})
	if _, err := allowed.pull("reg/lib/img:1"); err != nil {
		t.Fatalf("pull with the realm's host allowed: %v", err)
	}
	if reg.TokenRequests() == 0 {
		t.Fatal("no token was requested")
	}

	// The upstream's own host on another port needs no entry (the usual
	// LAN registry; every other test runs this way).
	same := newGuardedEnv(t, "", nil, proxy.Options{}, upSpec{name: "reg", url: reg.Server.URL, def: true})
	if _, err := same.pull("reg/lib/img:1"); err != nil {
		t.Fatalf("pull with the realm on the upstream's host, another port: %v", err)
	}
}

// cdn counts requests and whether any carried credentials, serving target.
type cdn struct {
	srv       *httptest.Server
	hits      atomic.Int32
	withCreds atomic.Int32
}

func newCDN(t *testing.T, target string) *cdn {
	c := &cdn{}
	tu, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(tu)
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		if r.Header.Get("Authorization") != "" {
			c.withCreds.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// Blob 307s to an object store: refused on a private host that is not the
// upstream's, followed when allowed or on the upstream's own host, never
// with credentials.
func TestSSRFBlobRedirect(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img := testutil.PushImage(t, reg.DirectHost, "lib/img", "1", 1, 4096)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	d := digest.Digest(ld.String())
	store := newCDN(t, reg.Direct.URL) // 127.0.0.1, another port
	reg.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, store.srv.URL+r.URL.Path+"?X-Amz-Signature=presigned", http.StatusTemporaryRedirect)
			return true
		}
		return false
	})
	up := front(t, reg.Server.URL)
	path := "/v2/reg/lib/img/blobs/" + d.String()

	e := newGuardedEnv(t, "", nil, proxy.Options{}, upSpec{name: "reg", url: up, def: true, user: "u", pass: "p"})
	resp := e.do("GET", path)
	b := body(t, resp)
	if resp.StatusCode != http.StatusBadGateway || ociCode(t, b) != "UNAVAILABLE" || !strings.Contains(string(b), "SSRF guard") {
		t.Fatalf("blob redirected to 127.0.0.1 (upstream 127.0.0.2) = %d %s", resp.StatusCode, b)
	}
	if strings.Contains(string(b), "presigned") {
		t.Errorf("error body shows the presigned query: %s", b)
	}
	if store.hits.Load() != 0 || len(e.blobFiles()) != 0 {
		t.Fatalf("object store hit %d times, %d blobs stored", store.hits.Load(), len(e.blobFiles()))
	}

	for name, env := range map[string]*guardedEnv{
		"allowed":       newGuardedEnv(t, "", []string{"127.0.0.0/8"}, proxy.Options{}, upSpec{name: "reg", url: up, def: true, user: "u", pass: "p"}),
		"upstream host": newGuardedEnv(t, "", nil, proxy.Options{}, upSpec{name: "reg", url: reg.Server.URL, def: true, user: "u", pass: "p"}),
	} {
		resp := env.do("GET", path)
		b := body(t, resp)
		if resp.StatusCode != 200 || digest.FromBytes(b) != d {
			t.Fatalf("%s: blob through the redirect = %d, %d bytes", name, resp.StatusCode, len(b))
		}
	}
	if store.withCreds.Load() != 0 {
		t.Fatalf("the object store got credentials %d times", store.withCreds.Load())
	}
}

// ollama's presigned object-store 307s go through the same guard.
func TestSSRFOllamaRedirect(t *testing.T) {
	o := testutil.NewOllamaRegistry(t)
	m := testutil.NewOllamaModel(1000)
	o.Add("library/m:t", m)
	up := front(t, o.Server.URL)
	var model digest.Digest
	for d := range m.Blobs {
		model = d
	}
	path := "/v2/registry.ollama.ai/library/m/blobs/" + model.String()

	e := newGuardedEnv(t, "", nil, proxy.Options{}, upSpec{name: "registry.ollama.ai", url: up, ollama: true})
	ssrfRefused(t, "ollama blob 307 to 127.0.0.1 (upstream 127.0.0.2)", e.doUA("GET", path, ollamaUA))
	if full, ranged := o.StoreGets(model); full+ranged != 0 {
		t.Fatalf("object store got %d requests past the guard", full+ranged)
	}
	ok := newGuardedEnv(t, "", []string{"127.0.0.1"}, proxy.Options{}, upSpec{name: "registry.ollama.ai", url: up, ollama: true})
	resp := ok.doUA("GET", path, ollamaUA)
	if b := body(t, resp); resp.StatusCode != 200 || !bytes.Equal(b, m.Blobs[model]) {
		t.Fatalf("allowed ollama blob = %d, %d bytes", resp.StatusCode, len(b))
	}
}

// The hub's 302s to its CDN: refused when the CDN is a private host other
// than the hub's, followed when allowed, never with the token.
func TestSSRFHubCDN(t *testing.T) {
	hub := testutil.NewHub(t)
	commit := strings.Repeat("c", 40)
	lfs := bytes.Repeat([]byte{9}, 50000)
	hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/M", Refs: map[string]string{"main": commit},
		Commits: map[string]map[string]testutil.HubFile{commit: {"config.json": {Data: []byte(`{}`)}, "model.bin": {Data: lfs, LFS: true}}}})
	up := front(t, hub.URL)

	e := newGuardedEnv(t, "", nil, proxy.Options{}, upSpec{name: "huggingface.co", url: up, hf: true})
	resp := e.do("GET", "/Org/M/resolve/main/model.bin")
	b := body(t, resp)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "SSRF guard") || resp.Header.Get("X-Error-Message") == "" {
		t.Fatalf("LFS file via a CDN on 127.0.0.1 (hub 127.0.0.2) = %d %s", resp.StatusCode, b)
	}
	if n := hub.CDNGets(testutil.SHA256(lfs)); n != 0 {
		t.Fatalf("CDN got %d GETs past the guard", n)
	}
	ok := newGuardedEnv(t, "", []string{"127.0.0.1"}, proxy.Options{}, upSpec{name: "huggingface.co", url: up, hf: true})
	resp = ok.do("GET", "/Org/M/resolve/main/model.bin")
	if b := body(t, resp); resp.StatusCode != 200 || !bytes.Equal(b, lfs) {
		t.Fatalf("allowed CDN = %d, %d bytes", resp.StatusCode, len(b))
	}
}

// http.Server's MaxHeaderBytes (64 KiB) holds: a client sending more gets
// 431 before any handler runs.
func TestHeaderSizeLimit(t *testing.T) {
	e := newEnv(t)
	hs := server.New(e.proxy, zerolog.Nop()).HTTPServer("127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	get := func(n int) int {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/v2/", nil)
		req.Header.Set("X-Filler", strings.Repeat("a", n))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(32 << 10); s != 200 {
		t.Errorf("32 KiB of headers = %d, want 200", s)
	}
	if s := get(80 << 10); s != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("80 KiB of headers = %d, want 431", s)
	}
}

// slowBlobs is an upstream whose blobs (digests of known contents) send
// their first byte and then wait for release.
type slowBlobs struct {
	srv     *httptest.Server
	blobs   map[digest.Digest][]byte
	release chan struct{}
	once    sync.Once
}

func newSlowBlobs(t *testing.T, n int) *slowBlobs {
	s := &slowBlobs{blobs: map[digest.Digest][]byte{}, release: make(chan struct{})}
	for range n {
		b := make([]byte, 1000)
		rand.Read(b)
		s.blobs[digest.FromBytes(b)] = b
	}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := strings.LastIndex(r.URL.Path, "/blobs/")
		b, ok := s.blobs[digest.Digest(r.URL.Path[i+len("/blobs/"):])]
		if i < 0 || !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b[:1])
		w.(http.Flusher).Flush()
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
		w.Write(b[1:])
	}))
	t.Cleanup(func() { s.free(); s.srv.Close() })
	return s
}

func (s *slowBlobs) free() { s.once.Do(func() { close(s.release) }) }

func (s *slowBlobs) digests() []digest.Digest {
	var out []digest.Digest
	for d := range s.blobs {
		out = append(out, d)
	}
	return out
}

// max_fills_per_client: past the cap, a cold blob gets 429 TOOMANYREQUESTS
// with Retry-After; joining a running fill, another client and, once fills
// end, the same client are served.
func TestMaxFillsPerClient(t *testing.T) {
	up := newSlowBlobs(t, 3)
	e := newGuardedEnv(t, "", nil, proxy.Options{MaxFillsPerClient: 2}, upSpec{name: "up", url: up.srv.URL, def: true})
	ds := up.digests()
	path := func(d digest.Digest) string { return e.srv.URL + "/v2/up/x/blobs/" + d.String() }
	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	for _, d := range ds[:2] {
		resp, err := http.Get(path(d))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("fill %d: %v %v", len(open), resp, err)
		}
		open = append(open, resp)
	}
	resp := e.do("GET", "/v2/up/x/blobs/"+ds[2].String())
	b := body(t, resp)
	if resp.StatusCode != http.StatusTooManyRequests || ociCode(t, b) != "TOOMANYREQUESTS" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third cold blob = %d %s (Retry-After %q), want 429 TOOMANYREQUESTS", resp.StatusCode, b, resp.Header.Get("Retry-After"))
	}
	// Joining a running fill is free.
	join, err := http.Get(path(ds[0]))
	if err != nil || join.StatusCode != 200 {
		t.Fatalf("joining a running fill: %v %v", join, err)
	}
	open = append(open, join)
	// Another client address has its own budget.
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	if r, err := other.Get(path(ds[2])); err != nil {
		t.Skipf("cannot dial from 127.0.0.2: %v", err)
	} else {
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Fatalf("another client's cold blob = %d", r.StatusCode)
		}
	}
	up.free()
	for _, r := range open {
		if b, err := io.ReadAll(r.Body); err != nil || len(b) != 1000 {
			t.Fatalf("released fill: %d bytes, %v", len(b), err)
		}
	}
	// Fills ended: the budget is back (the blob is held by now anyway, so
	// use a fresh upstream blob count via the held check).
	deadline := time.Now().Add(5 * time.Second)
	for e.proxy.Filler().InFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	resp = e.do("GET", "/v2/up/x/blobs/"+ds[2].String())
	if b := body(t, resp); resp.StatusCode != 200 || len(b) != 1000 {
		t.Fatalf("after the fills ended: %d %s", resp.StatusCode, b)
	}
}

// trusted_proxies: behind a load balancer each client's X-Forwarded-For
// address has its own fill budget; from any other peer the header is
// ignored (a client cannot buy more fills by writing it).
func TestMaxFillsPerClientBehindBalancer(t *testing.T) {
	up := newSlowBlobs(t, 5)
	e := newGuardedEnv(t, "", nil, proxy.Options{MaxFillsPerClient: 1}, upSpec{name: "up", url: up.srv.URL, def: true})
	lb := httptest.NewServer(server.New(e.proxy, zerolog.Nop(), server.Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}))
	t.Cleanup(lb.Close)
	ds := up.digests()
	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	get := func(base string, d digest.Digest, xff string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/v2/up/x/blobs/"+d.String(), nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == 200 {
			open = append(open, resp) // held by the upstream until free
		} else {
			resp.Body.Close()
		}
		return resp.StatusCode
	}
	steps := []struct {
		base, xff string
		blob      int
		want      int
	}{
		{lb.URL, "198.51.100.1", 0, 200},
		{lb.URL, "198.51.100.2", 1, 200},              // another client behind the balancer
		{lb.URL, "198.51.100.1", 2, 429},              // the first one again, at its cap
		{lb.URL, "203.0.113.9, 198.51.100.1", 2, 429}, // its own claim on the left is not believed
		{lb.URL, "198.51.100.3, 127.0.0.9", 2, 200},   // through a second trusted hop
		{e.srv.URL, "198.51.100.4", 3, 200},           // direct peer 127.0.0.1: its own budget
		{e.srv.URL, "198.51.100.5", 4, 429},           // and the header buys it nothing
	}
	for i, st := range steps {
		if got := get(st.base, ds[st.blob], st.xff); got != st.want {
			t.Errorf("step %d (X-Forwarded-For %q via %s) = %d, want %d", i, st.xff, st.base, got, st.want)
		}
	}
	up.free()
}

// request_timeout bounds a whole non-blob request (tags, cold manifests,
// the hub API) when the upstream hangs; a blob stream that outlasts it is
// not cut.
func TestRequestTimeout(t *testing.T) {
	hang := make(chan struct{})
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	reg.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/slow/") {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return true
		}
		return false
	})
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hub.Close)
	t.Cleanup(func() { close(hang) }) // before the servers close (cleanups run last first)
	blob := testutil.NewBlobServer(t, 256<<10)
	blob.Rate = 256 << 10 // one second for the whole blob
	e := newGuardedEnv(t, "", nil, proxy.Options{RequestTimeout: 300 * time.Millisecond, RevalidateTimeout: 8 * time.Second, UpstreamTimeout: 20 * time.Second},
		upSpec{name: "reg", url: reg.Server.URL, def: true}, upSpec{name: "blob", url: blob.URL}, upSpec{name: "huggingface.co", url: hub.URL, hf: true})
	for _, p := range []string{"/v2/reg/slow/x/tags/list", "/v2/reg/slow/x/manifests/1", "/api/models/org/slow", "/api/models/org/slow/tree/main"} {
		start := time.Now()
		resp := e.do("GET", p)
		b := body(t, resp)
		if took := time.Since(start); resp.StatusCode < 500 || took > 3*time.Second {
			t.Errorf("GET %s against a hanging upstream = %d after %v (%s); want 5xx within the request timeout", p, resp.StatusCode, took, b)
		}
	}
	start := time.Now()
	resp := e.do("GET", "/v2/blob/x/blobs/"+blob.Digest.String())
	b := body(t, resp)
	if resp.StatusCode != 200 || !bytes.Equal(b, blob.Data) || time.Since(start) < 500*time.Millisecond {
		t.Fatalf("slow blob stream = %d, %d bytes in %v; want it whole, past the request timeout", resp.StatusCode, len(b), time.Since(start))
	}
}

// JSON nested deeper than 64 levels from an upstream manifest or the hub
// is refused with a 502, never parsed or stored.
func TestJSONDepthLimit(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 200) + "1" + strings.Repeat("}", 200)
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	reg.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/deep/") {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			fmt.Fprint(w, deep)
			return true
		}
		return false
	})
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, deep)
	}))
	t.Cleanup(hub.Close)
	e := newGuardedEnv(t, "", nil, proxy.Options{}, upSpec{name: "reg", url: reg.Server.URL, def: true}, upSpec{name: "huggingface.co", url: hub.URL, hf: true})
	resp := e.do("GET", "/v2/reg/deep/x/manifests/1")
	if b := body(t, resp); resp.StatusCode != http.StatusBadGateway || ociCode(t, b) != "MANIFEST_INVALID" {
		t.Errorf("deep manifest = %d %s, want 502 MANIFEST_INVALID", resp.StatusCode, b)
	}
	for _, p := range []string{"/api/models/org/deep", "/api/models/org/deep/tree/main", "/org/deep/resolve/main/x"} {
		resp := e.do("GET", p)
		if b := body(t, resp); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("GET %s with a deep hub answer = %d %s, want 502", p, resp.StatusCode, b)
		}
	}
	if len(e.blobFiles()) != 0 {
		t.Errorf("deep JSON stored: %v", e.blobFiles())
	}
}

// hostile upload size: max_upload_size answers 413 SIZE_INVALID.
func TestMaxUploadSizeHTTP(t *testing.T) {
	e := newGuardedEnv(t, "", nil, proxy.Options{})
	e.hs.MaxUploadSize = 1 << 10
	big := bytes.Repeat([]byte{1}, 2<<10)
	req, _ := http.NewRequest("POST", e.srv.URL+"/v2/local/a/blobs/uploads/?digest="+digest.FromBytes(big).String(), bytes.NewReader(big))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); resp.StatusCode != http.StatusRequestEntityTooLarge || ociCode(t, b) != "SIZE_INVALID" {
		t.Fatalf("monolithic upload past max_upload_size = %d %s", resp.StatusCode, b)
	}
	// A streamed (chunked, no length) PATCH is cut off too.
	resp = e.do("POST", "/v2/local/a/blobs/uploads/")
	loc := resp.Header.Get("Location")
	resp.Body.Close()
	req, _ = http.NewRequest("PATCH", e.srv.URL+loc, io.MultiReader(bytes.NewReader(big)))
	req.ContentLength = -1
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("streamed chunk past max_upload_size = %d %s", resp.StatusCode, b)
	}
	if len(e.blobFiles()) != 0 {
		t.Fatal("an oversized upload was stored")
	}
}

// A trickled upload (a body that stops sending) is failed once it has
// been silent for the body idle timeout: 408 BLOB_UPLOAD_INVALID, the
// connection and upload file released, the session still at the bytes it
// had, and a slow but steady body is not cut however long it runs.
func TestUploadBodyIdle(t *testing.T) {
	e := newGuardedEnv(t, "", nil, proxy.Options{})
	srv := httptest.NewServer(server.New(e.proxy, zerolog.Nop(), server.Options{Hosted: e.hs, BodyIdleTimeout: time.Second}))
	t.Cleanup(srv.Close)
	start := func() string {
		resp, err := http.Post(srv.URL+"/v2/local/slow/blobs/uploads/", "", nil)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start upload: %v %v", resp, err)
		}
		resp.Body.Close()
		return resp.Header.Get("Location")
	}

	// 10 of the 1000 bytes promised, then silence.
	loc := start()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789", loc)
	began := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a silent body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if took := time.Since(began); resp.StatusCode != http.StatusRequestTimeout || ociCode(t, b) != "BLOB_UPLOAD_INVALID" || took > 5*time.Second {
		t.Fatalf("silent body = %d %s after %v, want 408 BLOB_UPLOAD_INVALID soon after 1 s", resp.StatusCode, b, took)
	}
	st, err := http.Get(srv.URL + loc)
	if err != nil {
		t.Fatal(err)
	}
	st.Body.Close()
	if st.StatusCode != http.StatusNoContent || st.Header.Get("Range") != "0-0" && st.Header.Get("Range") != "" {
		t.Errorf("upload status after the cut = %d Range %q, want 204 with nothing kept of the cut chunk", st.StatusCode, st.Header.Get("Range"))
	}

	// A body that keeps sending (every 150 ms, 1.8 s in all) is not cut.
	data := bytes.Repeat([]byte("s"), 12)
	pr, pw := io.Pipe()
	go func() {
		for _, c := range data {
			time.Sleep(150 * time.Millisecond)
			pw.Write([]byte{c})
		}
		pw.Close()
	}()
	put := start()
	if strings.Contains(put, "?") {
		put += "&digest=" + digest.FromBytes(data).String()
	} else {
		put += "?digest=" + digest.FromBytes(data).String()
	}
	req, _ := http.NewRequest("PUT", srv.URL+put, pr)
	req.ContentLength = int64(len(data))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); resp.StatusCode != http.StatusCreated {
		t.Fatalf("slow steady upload = %d %s, want 201", resp.StatusCode, b)
	}
}
