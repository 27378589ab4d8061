package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/server"
)

const ollamaUA = "ollama/0.32.15 (amd64 linux) Go/go1.26.8"

func (e *env) doUA(method, path, ua string, hdr ...string) *http.Response {
	return e.do(method, path, append([]string{"User-Agent", ua}, hdr...)...)
}

// C12: registry.ollama.ai's manifests are text/plain, chunked, without a
// digest; Clowder stores them byte-exact, takes the media type from the body
// and serves proper headers, HEAD from the stored copy.
func TestOllamaManifestQuirks(t *testing.T) {
	o := testutil.NewOllamaRegistry(t)
	m := testutil.NewOllamaModel(1000)
	o.Add("library/m", m)
	o.Add("library/m:t", m)
	e := newEnv(t, upSpec{name: "registry.ollama.ai", url: o.Server.URL, ollama: true, ttl: time.Hour})

	want := digest.FromBytes(m.Manifest).String()
	for i, c := range []struct {
		method, path, ua, accept string
	}{
		{"GET", "/v2/library/m/manifests/t", ollamaUA, "application/vnd.docker.distribution.manifest.v2+json"},
		{"GET", "/v2/library/m/manifests/t", ollamaUA, ""},
		{"HEAD", "/v2/library/m/manifests/t", ollamaUA, ""},
		{"GET", "/v2/registry.ollama.ai/library/m/manifests/t", "oras/1.3.6", "application/vnd.oci.image.manifest.v1+json"},
		{"HEAD", "/v2/registry.ollama.ai/library/m/manifests/t", "containerd/1.6", ""},
		{"GET", "/v2/registry.ollama.ai/library/m/manifests/" + want, "crane", ""},
	} {
		hdr := []string{}
		if c.accept != "" {
			hdr = append(hdr, "Accept", c.accept)
		}
		resp := e.doUA(c.method, c.path, c.ua, hdr...)
		b := body(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("#%d %s %s = %d %s", i, c.method, c.path, resp.StatusCode, b)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.docker.distribution.manifest.v2+json" {
			t.Errorf("#%d Content-Type = %q, want the body's mediaType", i, ct)
		}
		if resp.Header.Get("Docker-Content-Digest") != want || resp.ContentLength != int64(len(m.Manifest)) {
			t.Errorf("#%d digest %q length %d, want %s %d", i, resp.Header.Get("Docker-Content-Digest"), resp.ContentLength, want, len(m.Manifest))
		}
		if c.method == "GET" && !bytes.Equal(b, m.Manifest) {
			t.Errorf("#%d body is not the upstream's bytes", i)
		}
	}
	if _, ok := e.names()["registry.ollama.ai/library/m:t"]; !ok {
		t.Errorf("index.json lacks registry.ollama.ai/library/m:t: %v", e.names())
	}
	// A tag with none: ollama's default is "latest", the registry's too.
	resp := e.doUA("GET", "/v2/library/nope/manifests/latest", ollamaUA)
	if b := body(t, resp); resp.StatusCode != 404 || ociCode(t, b) != "MANIFEST_UNKNOWN" {
		t.Errorf("missing model = %d %s, want 404 MANIFEST_UNKNOWN", resp.StatusCode, b)
	}
}

// C09, C10, C11, C07: the ollama client's blob protocol on a cold cache, then
// warm with the registry and its object store gone and the signed URL long
// expired.
func TestOllamaBlobProtocol(t *testing.T) {
	o := testutil.NewOllamaRegistry(t)
	o.Expiry = time.Second
	m := testutil.NewOllamaModel(2 << 20) // 8 MiB model layer
	o.Add("library/m:t", m)
	e := newEnv(t, upSpec{name: "registry.ollama.ai", url: o.Server.URL, ollama: true, ttl: time.Hour})
	data := m.Blobs[m.Model]
	size := int64(len(data))
	path := "/v2/library/m/blobs/" + m.Model.String()

	for round := range 2 {
		if round == 1 {
			time.Sleep(1500 * time.Millisecond) // every signed URL has expired
			o.Server.Close()
			o.Store.Close()
		}
		// 1. HEAD: the only source of the size.
		resp := e.doUA("HEAD", path, ollamaUA)
		body(t, resp)
		if resp.StatusCode != 200 || resp.ContentLength != size || resp.Header.Get("Docker-Content-Digest") != m.Model.String() || resp.Header.Get("Accept-Ranges") != "bytes" {
			t.Fatalf("round %d HEAD = %d len %d %v", round, resp.StatusCode, resp.ContentLength, resp.Header)
		}
		// 2. The probe GET: the client reads Location and drops the body.
		resp = e.doUA("GET", path, ollamaUA)
		loc, err := resp.Location()
		resp.Body.Close()
		canonical := "/v2/registry.ollama.ai/library/m/blobs/" + m.Model.String()
		if resp.StatusCode != 200 || err != nil || loc.Path != canonical {
			t.Fatalf("round %d probe GET = %d Location %v (%v), want 200 pointing at %s", round, resp.StatusCode, loc, err, canonical)
		}
		// 3. 16 concurrent parts, no Authorization, status unchecked by the
		// client: each must be the exact slice.
		part := size / 16
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, b := int64(i)*part, int64(i+1)*part-1
				if i == 15 {
					b = size - 1
				}
				req, _ := http.NewRequest("GET", e.srv.URL+loc.Path, nil)
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", a, b))
				req.Header.Set("User-Agent", "Go-http-client/1.1") // as ollama's parts
				r, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("part %d: %v", i, err)
					return
				}
				got, err := io.ReadAll(r.Body)
				r.Body.Close()
				if err != nil || r.StatusCode != 206 || !bytes.Equal(got, data[a:b+1]) {
					t.Errorf("round %d part %d: status %d, %d bytes, right %v, err %v", round, i, r.StatusCode, len(got), bytes.Equal(got, data[a:b+1]), err)
				}
			}()
		}
		wg.Wait()
		if round == 0 {
			if full, _ := o.StoreGets(m.Model); full != 1 {
				t.Errorf("object store full GETs = %d, want 1", full)
			}
		}
	}
}

// The listener's own default upstream wins over the ollama User-Agent rule,
// so a second port can serve a company OCI registry to ollama clients.
func TestListenerDefaultBeatsUserAgent(t *testing.T) {
	o := testutil.NewOllamaRegistry(t)
	m := testutil.NewOllamaModel(100)
	o.Add("library/m:t", m)
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img := testutil.PushImage(t, reg.DirectHost, "library/m", "t", 1, 100)
	imgDigest, _ := img.Digest()
	e := newEnv(t,
		upSpec{name: "registry.ollama.ai", url: o.Server.URL, ollama: true},
		upSpec{name: "corp", url: "http://" + reg.Host},
	)
	second := httptest.NewServer(server.New(e.proxy, zerolog.Nop(), server.Options{DefaultUpstream: "corp"}))
	defer second.Close()

	resp := e.doUA("GET", "/v2/library/m/manifests/t", ollamaUA)
	b := body(t, resp)
	if resp.StatusCode != 200 || digest.FromBytes(b) != digest.FromBytes(m.Manifest) {
		t.Errorf("main listener, ollama UA: %d, want the ollama model", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", second.URL+"/v2/library/m/manifests/t", nil)
	req.Header.Set("User-Agent", ollamaUA)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Header.Get("Docker-Content-Digest") != imgDigest.String() {
		t.Errorf("second listener, ollama UA: digest %s, want corp's %s", r2.Header.Get("Docker-Content-Digest"), imgDigest)
	}
	r2.Body.Close()
	// Without the ollama UA and without a default upstream: NAME_UNKNOWN.
	resp = e.doUA("GET", "/v2/library/m/manifests/t", "curl/8")
	if b := body(t, resp); resp.StatusCode != 404 || ociCode(t, b) != "NAME_UNKNOWN" {
		t.Errorf("no route: %d %s", resp.StatusCode, b)
	}
}
