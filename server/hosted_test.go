package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/hosted"
	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/server"
	"github.com/clowder-dev/clowder/upstream"
	"github.com/clowder-dev/clowder/upstream/oci"
)

// hostedEnv is a server with hosted repositories under "local" and,
// optionally, a default upstream named docker.io.
type hostedEnv struct {
	t     *testing.T
	root  string
	store *cas.Layout
	hs    *hosted.Store
	srv   *httptest.Server
	host  string
}

func newHostedEnv(t *testing.T, upstreamURL string) *hostedEnv {
	t.Helper()
	root := t.TempDir()
	store, err := cas.OpenLayout(root)
	if err != nil {
		t.Fatal(err)
	}
	var ups []*upstream.Upstream
	if upstreamURL != "" {
		c, err := oci.New(upstreamURL, oci.Options{Name: "docker.io"})
		if err != nil {
			t.Fatal(err)
		}
		ttl := config.Duration(time.Minute)
		ups = append(ups, &upstream.Upstream{Upstream: config.Upstream{Name: "docker.io", Type: config.TypeOCI, URL: upstreamURL, Default: true, TagTTL: &ttl}, Source: c})
	}
	p := proxy.New(store, cas.NewFiller(store), upstream.NewRouter(ups), proxy.Options{RevalidateTimeout: 2 * time.Second, UpstreamTimeout: 10 * time.Second})
	hs, err := hosted.Open(store, root, "local")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(p, zerolog.Nop(), server.Options{Hosted: hs}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &hostedEnv{t: t, root: root, store: store, hs: hs, srv: srv, host: u.Host}
}

// req sends one request; hdr are key, value pairs. It returns the response
// (body closed) and the body.
func (e *hostedEnv) req(method, path string, b []byte, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	if b != nil {
		rd = bytes.NewReader(b)
	}
	if !strings.HasPrefix(path, "http") {
		path = e.srv.URL + path
	}
	req, err := http.NewRequest(method, path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
		if hdr[i] == "Content-Length" {
			fmt.Sscan(hdr[i+1], &req.ContentLength)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, out
}

// expect checks status and, for errors, the OCI code.
func (e *hostedEnv) expect(what string, resp *http.Response, b []byte, status int, code string) {
	e.t.Helper()
	expectOCI(e.t, what, resp, b, status, code)
}

func expectOCI(t *testing.T, what string, resp *http.Response, b []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s: status %d, want %d (%s)", what, resp.StatusCode, status, b)
	}
	if code != "" {
		if got := ociCode(t, b); got != code {
			t.Fatalf("%s: code %s, want %s (%s)", what, got, code, b)
		}
	}
}

// pushBlob pushes b monolithically into repo and returns its digest.
func (e *hostedEnv) pushBlob(repo string, b []byte) digest.Digest {
	e.t.Helper()
	d := digest.FromBytes(b)
	resp, body := e.req("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), b, "Content-Type", "application/octet-stream")
	e.expect("monolithic push", resp, body, http.StatusCreated, "")
	if loc := resp.Header.Get("Location"); loc != "/v2/"+repo+"/blobs/"+d.String() {
		e.t.Fatalf("monolithic push: Location %q", loc)
	}
	return d
}

// start opens an upload session and returns its Location.
func (e *hostedEnv) start(repo string) string {
	e.t.Helper()
	resp, body := e.req("POST", "/v2/"+repo+"/blobs/uploads/", nil)
	e.expect("POST upload", resp, body, http.StatusAccepted, "")
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/v2/"+repo+"/blobs/uploads/") || resp.Header.Get("Range") != "0-0" {
		e.t.Fatalf("POST upload: Location %q Range %q", loc, resp.Header.Get("Range"))
	}
	return loc
}

func (e *hostedEnv) blobFiles() []string {
	var out []string
	_ = filepath.Walk(filepath.Join(e.root, "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			out = append(out, filepath.Base(p))
		}
		return nil
	})
	return out
}

func (e *hostedEnv) held(d digest.Digest) bool {
	_, err := os.Stat(filepath.Join(e.root, "blobs", d.Algorithm().String(), d.Encoded()))
	return err == nil
}

func hostedRand(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// imageManifest builds an OCI image manifest over config and layers (each
// pushed or not by the caller).
func imageManifest(t *testing.T, config []byte, layers [][]byte, subject *ocispec.Descriptor, annotations map[string]string) []byte {
	t.Helper()
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}, Layers: []ocispec.Descriptor{}, Subject: subject, Annotations: annotations}
	m.SchemaVersion = 2
	for _, l := range layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(l), Size: int64(len(l))})
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *hostedEnv) putManifest(repo, ref string, m []byte) *http.Response {
	e.t.Helper()
	resp, body := e.req("PUT", "/v2/"+repo+"/manifests/"+ref, m, "Content-Type", ocispec.MediaTypeImageManifest)
	e.expect("PUT manifest "+ref, resp, body, http.StatusCreated, "")
	return resp
}

func TestHostedPushPullNamesAndCatalog(t *testing.T) {
	e := newHostedEnv(t, "")
	cfg, layer := []byte(`{"architecture":"amd64","os":"linux"}`), hostedRand(3000)
	dc, dl := e.pushBlob("local/team/model", cfg), e.pushBlob("local/team/model", layer)

	resp, b := e.req("GET", "/v2/local/team/model/blobs/"+dl.String(), nil)
	e.expect("GET blob", resp, b, http.StatusOK, "")
	if !bytes.Equal(b, layer) || resp.Header.Get("Docker-Content-Digest") != dl.String() {
		t.Fatalf("GET blob: %d bytes, digest header %q", len(b), resp.Header.Get("Docker-Content-Digest"))
	}
	resp, b = e.req("GET", "/v2/local/team/model/blobs/"+dl.String(), nil, "Range", "bytes=10-19")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, layer[10:20]) || resp.Header.Get("Content-Range") != "bytes 10-19/3000" {
		t.Fatalf("ranged GET: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	resp, _ = e.req("HEAD", "/v2/local/team/model/blobs/"+dc.String(), nil)
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(cfg)) {
		t.Fatalf("HEAD blob: %d, length %d", resp.StatusCode, resp.ContentLength)
	}

	m := imageManifest(t, cfg, [][]byte{layer}, nil, nil)
	dm := digest.FromBytes(m)
	resp = e.putManifest("local/team/model", "v1", m)
	if resp.Header.Get("Location") != "/v2/local/team/model/manifests/"+dm.String() || resp.Header.Get("Docker-Content-Digest") != dm.String() {
		t.Fatalf("PUT manifest: Location %q digest %q", resp.Header.Get("Location"), resp.Header.Get("Docker-Content-Digest"))
	}
	for _, ref := range []string{"v1", dm.String()} {
		resp, b = e.req("GET", "/v2/local/team/model/manifests/"+ref, nil)
		e.expect("GET manifest "+ref, resp, b, http.StatusOK, "")
		if !bytes.Equal(b, m) || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest || resp.Header.Get("Docker-Content-Digest") != dm.String() {
			t.Fatalf("GET manifest %s: type %q digest %q", ref, resp.Header.Get("Content-Type"), resp.Header.Get("Docker-Content-Digest"))
		}
	}

	// Names in index.json, readable by any OCI tool.
	names := map[string]bool{}
	descs, _ := e.store.List(context.Background())
	for _, d := range descs {
		names[d.Annotations[ocispec.AnnotationRefName]] = true
	}
	for _, n := range []string{"local/team/model:v1", "local/team/model@" + dm.String()} {
		if !names[n] {
			t.Errorf("index.json lacks %s (has %v)", n, names)
		}
	}

	e.pushBlob("local/other", []byte("x"))
	resp, b = e.req("GET", "/v2/_catalog", nil)
	e.expect("catalog", resp, b, http.StatusOK, "")
	var cat struct{ Repositories []string }
	_ = json.Unmarshal(b, &cat)
	if !slices.Equal(cat.Repositories, []string{"local/other", "local/team/model"}) {
		t.Fatalf("catalog = %v", cat.Repositories)
	}
	resp, b = e.req("GET", "/v2/_catalog?n=1", nil)
	_ = json.Unmarshal(b, &cat)
	if !slices.Equal(cat.Repositories, []string{"local/other"}) || !strings.Contains(resp.Header.Get("Link"), "last=local%2Fother") {
		t.Fatalf("catalog?n=1 = %v, Link %q", cat.Repositories, resp.Header.Get("Link"))
	}
	resp, b = e.req("GET", "/v2/_catalog?n=1&last=local/other", nil)
	_ = json.Unmarshal(b, &cat)
	if !slices.Equal(cat.Repositories, []string{"local/team/model"}) || resp.Header.Get("Link") != "" {
		t.Fatalf("catalog page 2 = %v, Link %q", cat.Repositories, resp.Header.Get("Link"))
	}
}

func TestHostedChunkedUpload(t *testing.T) {
	e := newHostedEnv(t, "")
	blob := hostedRand(3000)
	d := digest.FromBytes(blob)
	loc := e.start("local/a")
	chunk := func(first, last int) (*http.Response, []byte) {
		return e.req("PATCH", loc, blob[first:last+1], "Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", first, last))
	}

	// A first chunk that does not start at 0.
	resp, b := chunk(1000, 1999)
	e.expect("out-of-order first chunk", resp, b, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")

	resp, b = chunk(0, 999)
	e.expect("chunk 1", resp, b, http.StatusAccepted, "")
	if resp.Header.Get("Range") != "0-999" {
		t.Fatalf("chunk 1: Range %q", resp.Header.Get("Range"))
	}
	loc = resp.Header.Get("Location")

	// Skipping ahead and going back are both refused, and say where the
	// upload stands; nothing of the refused chunk is kept.
	for _, r := range [][2]int{{2000, 2999}, {0, 999}, {500, 1499}} {
		resp, b = chunk(r[0], r[1])
		e.expect(fmt.Sprintf("chunk %v", r), resp, b, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
		if resp.Header.Get("Range") != "0-999" || resp.Header.Get("Location") == "" {
			t.Fatalf("416: Range %q Location %q", resp.Header.Get("Range"), resp.Header.Get("Location"))
		}
	}
	resp, b = e.req("GET", loc, nil)
	e.expect("upload status", resp, b, http.StatusNoContent, "")
	if resp.Header.Get("Range") != "0-999" {
		t.Fatalf("status: Range %q", resp.Header.Get("Range"))
	}

	// Malformed range, and a range that disagrees with Content-Length.
	resp, b = e.req("PATCH", loc, blob[1000:2000], "Content-Range", "bytes=1000-")
	e.expect("malformed Content-Range", resp, b, http.StatusBadRequest, "BLOB_UPLOAD_INVALID")
	resp, b = e.req("PATCH", loc, blob[1000:2000], "Content-Range", "1000-2499")
	e.expect("range longer than body", resp, b, http.StatusBadRequest, "SIZE_INVALID")

	resp, b = chunk(1000, 1999)
	e.expect("chunk 2", resp, b, http.StatusAccepted, "")
	if e.held(d) {
		t.Fatal("blob visible under blobs/ before the upload is closed")
	}
	// The final chunk out of order in the closing PUT.
	resp, b = e.req("PUT", loc+"?digest="+d.String(), blob[2500:], "Content-Range", "2500-2999")
	e.expect("out-of-order final PUT", resp, b, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
	resp, b = e.req("PUT", loc+"?digest="+d.String(), blob[2000:], "Content-Range", "2000-2999")
	e.expect("closing PUT", resp, b, http.StatusCreated, "")
	if resp.Header.Get("Location") != "/v2/local/a/blobs/"+d.String() || !e.held(d) {
		t.Fatalf("closing PUT: Location %q, held %v", resp.Header.Get("Location"), e.held(d))
	}
	resp, b = e.req("GET", "/v2/local/a/blobs/"+d.String(), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, blob) {
		t.Fatalf("GET after chunked upload: %d, %d bytes", resp.StatusCode, len(b))
	}
	// The session is gone.
	resp, b = e.req("GET", loc, nil)
	e.expect("finished session", resp, b, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")

	// A streamed PATCH (no Content-Range) then PUT, with sha512.
	d512 := digest.SHA512.FromBytes(blob)
	loc = e.start("local/a")
	resp, b = e.req("PATCH", loc, blob)
	e.expect("streamed PATCH", resp, b, http.StatusAccepted, "")
	resp, b = e.req("PUT", resp.Header.Get("Location")+"?digest="+d512.String(), nil)
	e.expect("sha512 closing PUT", resp, b, http.StatusCreated, "")
	if !e.held(d512) {
		t.Fatal("sha512 blob not under blobs/sha512")
	}
}

func TestHostedUploadErrors(t *testing.T) {
	e := newHostedEnv(t, "")
	blob := hostedRand(100)
	d := digest.FromBytes(blob)
	wrong := digest.FromString("something else")

	for _, tc := range []struct {
		name         string
		method, path string
		body         []byte
		status       int
		code         string
	}{
		{"monolithic wrong digest", "POST", "/v2/local/a/blobs/uploads/?digest=" + wrong.String(), blob, 400, "DIGEST_INVALID"},
		{"monolithic malformed digest", "POST", "/v2/local/a/blobs/uploads/?digest=sha256:xyz", blob, 400, "DIGEST_INVALID"},
		{"monolithic unsupported algorithm", "POST", "/v2/local/a/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e", blob, 400, "UNSUPPORTED"},
		{"unknown session", "PATCH", "/v2/local/a/blobs/uploads/0123456789abcdef0123456789abcdef", blob, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"junk session id", "PUT", "/v2/local/a/blobs/uploads/xyz?digest=" + d.String(), blob, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"path traversal in session id", "PUT", "/v2/local/a/blobs/uploads/..%2f..%2fetc?digest=" + d.String(), blob, 404, ""},
		{"invalid name", "POST", "/v2/local/A/blobs/uploads/", nil, 400, "NAME_INVALID"},
		{"blob GET not pushed", "GET", "/v2/local/a/blobs/" + d.String(), nil, 404, "BLOB_UNKNOWN"},
		{"blob DELETE not pushed", "DELETE", "/v2/local/a/blobs/" + d.String(), nil, 404, "BLOB_UNKNOWN"},
		{"manifest unknown", "GET", "/v2/local/a/manifests/v1", nil, 404, "MANIFEST_UNKNOWN"},
		{"tags of unknown repository", "GET", "/v2/local/nothing/tags/list", nil, 404, "NAME_UNKNOWN"},
		{"POST on a session", "POST", "/v2/local/a/blobs/uploads/0123456789abcdef0123456789abcdef", nil, 405, "UNSUPPORTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := e.req(tc.method, tc.path, tc.body)
			expectOCI(t, tc.name, resp, b, tc.status, tc.code)
		})
	}
	if files := e.blobFiles(); len(files) != 0 {
		t.Fatalf("failed uploads left %v under blobs/", files)
	}

	// A session belongs to the repository it was started for.
	loc := e.start("local/a")
	other := strings.Replace(loc, "/local/a/", "/local/b/", 1)
	resp, b := e.req("PATCH", other, blob)
	e.expect("session of another repository", resp, b, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")

	// Closing PUT without a digest, then with the wrong one: the session ends.
	resp, b = e.req("PATCH", loc, blob)
	e.expect("PATCH", resp, b, http.StatusAccepted, "")
	resp, b = e.req("PUT", loc, nil)
	e.expect("PUT without digest", resp, b, http.StatusBadRequest, "DIGEST_INVALID")
	resp, b = e.req("PUT", loc+"?digest="+wrong.String(), nil)
	e.expect("PUT wrong digest", resp, b, http.StatusBadRequest, "DIGEST_INVALID")
	resp, b = e.req("GET", loc, nil)
	e.expect("session after a digest mismatch", resp, b, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")

	// Cancel.
	loc = e.start("local/a")
	resp, b = e.req("DELETE", loc, nil)
	e.expect("cancel", resp, b, http.StatusNoContent, "")
	resp, b = e.req("DELETE", loc, nil)
	e.expect("cancel again", resp, b, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")

	if files := e.blobFiles(); len(files) != 0 {
		t.Fatalf("failed uploads left %v under blobs/", files)
	}
	ents, _ := os.ReadDir(filepath.Join(e.root, ".clowder", "ingest"))
	if len(ents) != 0 {
		t.Fatalf("ingest files left: %v", ents)
	}
}

// A client that hangs up mid-body leaves nothing under blobs/ and no
// ingest file; the session keeps exactly the bytes it had.
func TestHostedHangUpLeavesNothingPartial(t *testing.T) {
	e := newHostedEnv(t, "")
	blob := hostedRand(1 << 20)
	d := digest.FromBytes(blob)
	send := func(method, path string, hdr string, n int) {
		t.Helper()
		c, err := net.Dial("tcp", e.host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n", method, path, e.host, len(blob), hdr)
		_, _ = c.Write(blob[:n])
		c.Close()
	}
	send("POST", "/v2/local/a/blobs/uploads/?digest="+d.String(), "", len(blob)/2)
	loc := e.start("local/a")
	resp, b := e.req("PATCH", loc, blob[:1000], "Content-Range", "0-999")
	e.expect("first chunk", resp, b, http.StatusAccepted, "")
	send("PATCH", loc, fmt.Sprintf("Content-Range: 1000-%d\r\n", len(blob)+999), 5000)
	send("PUT", loc+"?digest="+d.String(), fmt.Sprintf("Content-Range: 1000-%d\r\n", len(blob)+999), 5000)

	deadline := time.Now().Add(3 * time.Second)
	for {
		resp, b = e.req("GET", loc, nil)
		if resp.Header.Get("Range") == "0-999" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.expect("status after hang-ups", resp, b, http.StatusNoContent, "")
	if resp.Header.Get("Range") != "0-999" {
		t.Fatalf("status after hang-ups: Range %q, want 0-999", resp.Header.Get("Range"))
	}
	if files := e.blobFiles(); len(files) != 0 {
		t.Fatalf("hang-ups left %v under blobs/", files)
	}
	for time.Now().Before(deadline) {
		if ents, _ := os.ReadDir(filepath.Join(e.root, ".clowder", "ingest")); len(ents) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("ingest files left after hang-ups")
}

func TestHostedMountRules(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	e := newHostedEnv(t, reg.Server.URL)
	mount := func(repo, q string) *http.Response {
		t.Helper()
		resp, b := e.req("POST", "/v2/"+repo+"/blobs/uploads/?"+q, nil)
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusAccepted {
			t.Fatalf("mount %s?%s: %d %s", repo, q, resp.StatusCode, b)
		}
		return resp
	}
	d := e.pushBlob("local/a", []byte("shared layer"))

	resp := mount("local/b", "mount="+d.String()+"&from=local/a")
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v2/local/b/blobs/"+d.String() || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("mount from a repository that links it: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if r, _ := e.req("GET", "/v2/local/b/blobs/"+d.String(), nil); r.StatusCode != http.StatusOK {
		t.Fatalf("GET mounted blob: %d", r.StatusCode)
	}
	// From a repository that does not link it: an ordinary upload session.
	if resp := mount("local/c", "mount="+d.String()+"&from=local/nope"); resp.StatusCode != http.StatusAccepted || !strings.Contains(resp.Header.Get("Location"), "/blobs/uploads/") {
		t.Fatalf("mount from a repository without it: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if r, _ := e.req("GET", "/v2/local/c/blobs/"+d.String(), nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("GET of a blob whose mount failed: %d", r.StatusCode)
	}
	// Anonymous: any hosted repository that links it.
	if resp := mount("local/d", "mount="+d.String()); resp.StatusCode != http.StatusCreated {
		t.Fatalf("anonymous mount of a linked blob: %d", resp.StatusCode)
	}

	// A blob held only by the pull-through cache belongs to no hosted
	// repository: it cannot be mounted anonymously, nor from the proxied
	// repository's name, nor read by a hosted repository.
	img := testutil.PushImage(t, reg.DirectHost, "library/app", "1", 1, 512)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	cached := digest.Digest(ld.String())
	if r, b := e.req("GET", "/v2/library/app/blobs/"+cached.String(), nil); r.StatusCode != http.StatusOK {
		t.Fatalf("pull through: %d %s", r.StatusCode, b)
	}
	for deadline := time.Now().Add(3 * time.Second); !e.held(cached) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the commit follows the verified last byte
	}
	if !e.held(cached) {
		t.Fatal("cached blob not held")
	}
	for _, q := range []string{"mount=" + cached.String(), "mount=" + cached.String() + "&from=docker.io/library/app", "mount=" + cached.String() + "&from=library/app"} {
		if resp := mount("local/e", q); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("mount ?%s of a cache-only blob: %d, want 202", q, resp.StatusCode)
		}
	}
	if r, b := e.req("GET", "/v2/local/e/blobs/"+cached.String(), nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("GET of a cache-only blob in a hosted repository: %d %s", r.StatusCode, b)
	}
	// A bad mount digest is the client's error, not a session.
	resp, b := e.req("POST", "/v2/local/e/blobs/uploads/?mount=sha256:nothex", nil)
	e.expect("mount of a malformed digest", resp, b, http.StatusBadRequest, "DIGEST_INVALID")
}

func TestHostedBlobDeleteUnlinksOnlyThatRepository(t *testing.T) {
	e := newHostedEnv(t, "")
	blob := []byte("model weights")
	d := e.pushBlob("local/a", blob)
	e.pushBlob("local/b", blob)

	resp, b := e.req("DELETE", "/v2/local/a/blobs/"+d.String(), nil)
	e.expect("DELETE blob", resp, b, http.StatusAccepted, "")
	for _, m := range []string{"GET", "HEAD"} {
		if r, _ := e.req(m, "/v2/local/a/blobs/"+d.String(), nil); r.StatusCode != http.StatusNotFound {
			t.Fatalf("%s after DELETE in a: %d", m, r.StatusCode)
		}
	}
	resp, b = e.req("GET", "/v2/local/b/blobs/"+d.String(), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, blob) {
		t.Fatalf("GET in b after DELETE in a: %d", resp.StatusCode)
	}
	if !e.held(d) {
		t.Fatal("DELETE removed the bytes; it must only unlink (GC removes bytes)")
	}
	resp, b = e.req("DELETE", "/v2/local/a/blobs/"+d.String(), nil)
	e.expect("DELETE again", resp, b, http.StatusNotFound, "BLOB_UNKNOWN")
	// A mount from a, which no longer links it, falls back to an upload.
	if r, _ := e.req("POST", "/v2/local/c/blobs/uploads/?mount="+d.String()+"&from=local/a", nil); r.StatusCode != http.StatusAccepted {
		t.Fatalf("mount from a after unlink: %d", r.StatusCode)
	}
}

func TestHostedManifests(t *testing.T) {
	e := newHostedEnv(t, "")
	repo := "local/team/model"
	cfg, layer := []byte(`{}`), hostedRand(200)
	e.pushBlob(repo, cfg)
	e.pushBlob(repo, layer)

	// Blobs must be linked into this repository.
	e.pushBlob("local/elsewhere", []byte("elsewhere"))
	for _, tc := range []struct {
		name   string
		ref    string
		body   []byte
		ct     string
		status int
		code   string
	}{
		{"layer not pushed", "x", imageManifest(t, cfg, [][]byte{layer, []byte("never pushed")}, nil, nil), ocispec.MediaTypeImageManifest, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"layer in another repository", "x", imageManifest(t, cfg, [][]byte{[]byte("elsewhere")}, nil, nil), ocispec.MediaTypeImageManifest, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"index of a missing manifest", "x", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest.FromString("m").String() + `","size":10}]}`), ocispec.MediaTypeImageIndex, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"digest mismatch", digest.FromString("other").String(), imageManifest(t, cfg, nil, nil, nil), ocispec.MediaTypeImageManifest, 400, "DIGEST_INVALID"},
		{"malformed digest", "sha256:baddigeststring", imageManifest(t, cfg, nil, nil, nil), ocispec.MediaTypeImageManifest, 400, "DIGEST_INVALID"},
		{"not JSON", "x", []byte("{"), ocispec.MediaTypeImageManifest, 400, "MANIFEST_INVALID"},
		{"schema 1", "x", []byte(`{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}`), "application/vnd.docker.distribution.manifest.v1+prettyjws", 400, "MANIFEST_INVALID"},
		{"too large", "x", append(imageManifest(t, cfg, nil, nil, nil), bytes.Repeat([]byte(" "), hosted.MaxManifestSize)...), ocispec.MediaTypeImageManifest, 413, "MANIFEST_INVALID"},
		{"bad tag", "-x", imageManifest(t, cfg, nil, nil, nil), ocispec.MediaTypeImageManifest, 400, "MANIFEST_INVALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := e.req("PUT", "/v2/"+repo+"/manifests/"+tc.ref, tc.body, "Content-Type", tc.ct)
			expectOCI(t, tc.name, resp, b, tc.status, tc.code)
		})
	}

	// Non-distributable layers (with URLs) need not be pushed.
	nd := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: 2},
		Layers: []ocispec.Descriptor{{MediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Digest: digest.FromString("foreign"), Size: 7, URLs: []string{"https://example.com/layer"}}}}
	nd.SchemaVersion = 2
	ndb, _ := json.Marshal(nd)
	e.putManifest(repo, "foreign", ndb)

	// A subject: OCI-Subject, the referrers API with and without filter.
	subject := imageManifest(t, cfg, [][]byte{layer}, nil, nil)
	ds := digest.FromBytes(subject)
	e.putManifest(repo, "v1", subject)
	sdesc := &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: ds, Size: int64(len(subject))}
	sig := imageManifest(t, []byte(`{}`), nil, sdesc, map[string]string{"org.example.kind": "signature"})
	resp := e.putManifest(repo, digest.FromBytes(sig).String(), sig)
	if resp.Header.Get("OCI-Subject") != ds.String() {
		t.Fatalf("PUT with subject: OCI-Subject %q", resp.Header.Get("OCI-Subject"))
	}
	var art ocispec.Manifest
	_ = json.Unmarshal(imageManifest(t, cfg, nil, sdesc, nil), &art)
	art.ArtifactType = "application/vnd.example.sbom"
	artb, _ := json.Marshal(art)
	e.putManifest(repo, "sbom", artb)

	referrers := func(q string) (ocispec.Index, *http.Response) {
		t.Helper()
		resp, b := e.req("GET", "/v2/"+repo+"/referrers/"+ds.String()+q, nil)
		e.expect("referrers"+q, resp, b, http.StatusOK, "")
		var idx ocispec.Index
		if err := json.Unmarshal(b, &idx); err != nil || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex || idx.SchemaVersion != 2 {
			t.Fatalf("referrers%s: %v %q %s", q, err, resp.Header.Get("Content-Type"), b)
		}
		return idx, resp
	}
	idx, _ := referrers("")
	if len(idx.Manifests) != 2 {
		t.Fatalf("referrers: %d entries, want 2", len(idx.Manifests))
	}
	for _, x := range idx.Manifests {
		switch x.Digest {
		case digest.FromBytes(sig):
			if x.ArtifactType != ocispec.MediaTypeImageConfig || x.Annotations["org.example.kind"] != "signature" || x.Size != int64(len(sig)) {
				t.Errorf("signature referrer = %+v", x)
			}
		case digest.FromBytes(artb):
			if x.ArtifactType != "application/vnd.example.sbom" {
				t.Errorf("sbom referrer = %+v", x)
			}
		default:
			t.Errorf("unexpected referrer %+v", x)
		}
	}
	idx, resp = referrers("?artifactType=application/vnd.example.sbom")
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != digest.FromBytes(artb) || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers = %+v, header %q", idx.Manifests, resp.Header.Get("OCI-Filters-Applied"))
	}
	if idx, _ := referrers("?artifactType=none"); len(idx.Manifests) != 0 {
		t.Fatalf("referrers for an unmatched filter = %+v", idx.Manifests)
	}
	// Referrers of an unknown digest: an empty index, never a 404.
	if r, b := e.req("GET", "/v2/local/unknown/referrers/"+digest.FromString("x").String(), nil); r.StatusCode != http.StatusOK || !strings.Contains(string(b), `"manifests":[]`) {
		t.Fatalf("referrers of nothing: %d %s", r.StatusCode, b)
	}

	// Deleting a tag keeps the manifest; deleting by digest removes every
	// tag that points at it and its referrers entry.
	e.putManifest(repo, "v1-alias", subject)
	resp, b := e.req("DELETE", "/v2/"+repo+"/manifests/v1", nil)
	e.expect("DELETE tag", resp, b, http.StatusAccepted, "")
	if r, _ := e.req("GET", "/v2/"+repo+"/manifests/"+ds.String(), nil); r.StatusCode != http.StatusOK {
		t.Fatalf("manifest by digest after its tag was deleted: %d", r.StatusCode)
	}
	resp, b = e.req("DELETE", "/v2/"+repo+"/manifests/"+digest.FromBytes(artb).String(), nil)
	e.expect("DELETE manifest", resp, b, http.StatusAccepted, "")
	if idx, _ := referrers(""); len(idx.Manifests) != 1 {
		t.Fatalf("referrers after deleting one: %d", len(idx.Manifests))
	}
	resp, b = e.req("DELETE", "/v2/"+repo+"/manifests/"+ds.String(), nil)
	e.expect("DELETE subject", resp, b, http.StatusAccepted, "")
	for _, ref := range []string{"v1-alias", ds.String()} {
		resp, b = e.req("HEAD", "/v2/"+repo+"/manifests/"+ref, nil)
		e.expect("HEAD after delete "+ref, resp, b, http.StatusNotFound, "")
	}
	resp, b = e.req("DELETE", "/v2/"+repo+"/manifests/"+ds.String(), nil)
	e.expect("DELETE again", resp, b, http.StatusNotFound, "MANIFEST_UNKNOWN")
	resp, b = e.req("GET", "/v2/"+repo+"/tags/list", nil)
	var tl struct{ Tags []string }
	_ = json.Unmarshal(b, &tl)
	if !slices.Equal(tl.Tags, []string{"foreign"}) {
		t.Fatalf("tags after deletes = %v", tl.Tags)
	}
}

func TestHostedTagsPaginationAndTagParams(t *testing.T) {
	e := newHostedEnv(t, "")
	repo := "local/t"
	cfg := []byte(`{}`)
	e.pushBlob(repo, cfg)
	m := imageManifest(t, cfg, nil, nil, nil)
	dm := digest.FromBytes(m)
	resp, b := e.req("PUT", "/v2/"+repo+"/manifests/"+dm.String()+"?tag=c&tag=a&tag=b", m, "Content-Type", ocispec.MediaTypeImageManifest)
	e.expect("PUT with ?tag=", resp, b, http.StatusCreated, "")
	if got := resp.Header.Get("OCI-Tag"); got != "c, a, b" {
		t.Fatalf("OCI-Tag = %q", got)
	}
	list := func(q string) ([]string, string) {
		t.Helper()
		resp, b := e.req("GET", "/v2/"+repo+"/tags/list"+q, nil)
		e.expect("tags"+q, resp, b, http.StatusOK, "")
		var tl struct {
			Name string
			Tags []string
		}
		if err := json.Unmarshal(b, &tl); err != nil || tl.Name != repo || tl.Tags == nil {
			t.Fatalf("tags%s: %s", q, b)
		}
		return tl.Tags, resp.Header.Get("Link")
	}
	if tags, link := list(""); !slices.Equal(tags, []string{"a", "b", "c"}) || link != "" {
		t.Fatalf("tags = %v, Link %q", tags, link)
	}
	if tags, link := list("?n=2"); !slices.Equal(tags, []string{"a", "b"}) || link != `</v2/local/t/tags/list?last=b&n=2>; rel="next"` {
		t.Fatalf("tags?n=2 = %v, Link %q", tags, link)
	}
	if tags, link := list("?n=2&last=b"); !slices.Equal(tags, []string{"c"}) || link != "" {
		t.Fatalf("tags?n=2&last=b = %v, Link %q", tags, link)
	}
	if tags, link := list("?n=0"); len(tags) != 0 || link != "" {
		t.Fatalf("tags?n=0 = %v, Link %q", tags, link)
	}
	resp, b = e.req("GET", "/v2/"+repo+"/tags/list?n=-1", nil)
	e.expect("n=-1", resp, b, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID")
	// A repository with blobs but no tags lists no tags.
	e.pushBlob("local/empty", cfg)
	resp, b = e.req("GET", "/v2/local/empty/tags/list", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"tags":[]`) {
		t.Fatalf("tags of a repository without tags: %d %s", resp.StatusCode, b)
	}
}

// Hosted names never go upstream; ?ns= and other names still do, and
// proxied repositories stay read-only.
func TestHostedRouting(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, reg.DirectHost, "local/app", "1", 1, 256) // upstream has "local/app"
	e := newHostedEnv(t, reg.Server.URL)
	before := reg.Count("GET manifests") + reg.Count("HEAD manifests")
	resp, b := e.req("GET", "/v2/local/app/manifests/1", nil)
	e.expect("hosted name", resp, b, http.StatusNotFound, "MANIFEST_UNKNOWN")
	if n := reg.Count("GET manifests") + reg.Count("HEAD manifests"); n != before {
		t.Fatalf("a hosted name went upstream (%d requests)", n-before)
	}
	resp, b = e.req("GET", "/v2/local/app/manifests/1?ns=docker.io", nil, "Accept", ocispec.MediaTypeImageManifest)
	e.expect("?ns=docker.io", resp, b, http.StatusOK, "")
	resp, b = e.req("PUT", "/v2/library/app/manifests/1", []byte("{}"))
	e.expect("PUT on a proxied repository", resp, b, http.StatusMethodNotAllowed, "UNSUPPORTED")
	resp, b = e.req("POST", "/v2/library/app/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST upload on a proxied repository: %d %s", resp.StatusCode, b)
	}
}

// go-containerregistry's client (crane's) pushes images and indexes with
// its own choice of upload and mount requests, and pulls them back.
func TestHostedGoContainerRegistryClient(t *testing.T) {
	e := newHostedEnv(t, "")
	img := testutil.PushImage(t, e.host, "local/team/model", "v1", 3, 4096)
	testutil.PushImage(t, e.host, "local/team/model2", "v1", 1, 1024)
	testutil.PushIndex(t, e.host, "local/team/multi", "v1")
	want, _ := img.Digest()
	ref, _ := name.ParseReference(e.host+"/local/team/model:v1", name.Insecure)
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d != want {
		t.Fatalf("pulled %s, pushed %s", d, want)
	}
	layers, _ := got.Layers()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	// A copy to another hosted repository mounts instead of uploading.
	dst, _ := name.ParseReference(e.host+"/local/team/copy:v1", name.Insecure)
	if err := remote.Write(dst, got); err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(e.host+"/local/team/model", name.Insecure)
	tags, err := remote.List(repo)
	if err != nil || !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("remote.List = %v, %v", tags, err)
	}
	reg, _ := name.NewRegistry(e.host, name.Insecure)
	repos, err := remote.Catalog(context.Background(), reg)
	if err != nil || !slices.Equal(repos, []string{"local/team/copy", "local/team/model", "local/team/model2", "local/team/multi"}) {
		t.Fatalf("remote.Catalog = %v, %v", repos, err)
	}
}
