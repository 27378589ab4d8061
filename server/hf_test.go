package server_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/proxy"
)

const (
	commitA = "1111111111111111111111111111111111111111"
	commitB = "2222222222222222222222222222222222222222"
	commitP = "3333333333333333333333333333333333333333"
)

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

type hubFixture struct {
	hub    *testutil.Hub
	gguf   []byte
	weight []byte
	config []byte
	readme []byte
	nested []byte
}

func newHubFixture(t *testing.T) *hubFixture {
	f := &hubFixture{
		hub:    testutil.NewHub(t),
		gguf:   testutil.GGUF(50000),
		weight: randBytes(300000),
		config: []byte(`{"architectures":["LlamaForCausalLM"],"hidden_size":64}`),
		readme: []byte("# tiny\n"),
		nested: []byte("nested file\n"),
	}
	files := map[string]testutil.HubFile{
		"config.json":           {Data: f.config},
		"README.md":             {Data: f.readme},
		"model.safetensors":     {Data: f.weight, LFS: true},
		"tiny.Q4.gguf":          {Data: f.gguf, LFS: true},
		"tokenizer/vocab.txt":   {Data: f.nested},
		"tokenizer/extra/a.txt": {Data: []byte("a\n")},
	}
	pr := map[string]testutil.HubFile{"config.json": {Data: []byte(`{"pr":1}`)}}
	f.hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/Tiny", Refs: map[string]string{"main": commitA, "refs/pr/1": commitP},
		Commits: map[string]map[string]testutil.HubFile{commitA: files, commitP: pr}})
	f.hub.Add(&testutil.HubRepo{Type: "dataset", ID: "org/data", Refs: map[string]string{"main": commitB},
		Commits: map[string]map[string]testutil.HubFile{commitB: {"train.csv": {Data: []byte("a,b\n1,2\n")}}}})
	f.hub.Add(&testutil.HubRepo{Type: "model", ID: "org/gated", Refs: map[string]string{"main": commitB}, Gated: true,
		Commits: map[string]map[string]testutil.HubFile{commitB: {"w.bin": {Data: randBytes(1000), LFS: true}}}})
	return f
}

func hfEnv(t *testing.T, f *hubFixture) *env {
	return newEnv(t, upSpec{name: "huggingface.co", url: f.hub.URL, hf: true, ttl: time.Hour})
}

func TestHFResolveHeadersAndBytes(t *testing.T) {
	f := newHubFixture(t)
	e := hfEnv(t, f)
	cases := []struct {
		path string
		data []byte
		etag string
	}{
		{"/Org/Tiny/resolve/main/config.json", f.config, testutil.GitSHA1(f.config)},
		{"/Org/Tiny/resolve/main/model.safetensors", f.weight, testutil.SHA256(f.weight)},
		{"/Org/Tiny/resolve/" + commitA + "/tokenizer/vocab.txt", f.nested, testutil.GitSHA1(f.nested)},
		{"/org/tiny/resolve/main/tiny.Q4.gguf", f.gguf, testutil.SHA256(f.gguf)}, // miscased id
	}
	for round := range 2 {
		for _, c := range cases {
			resp := e.do("HEAD", c.path, "Accept-Encoding", "identity")
			body(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("round %d HEAD %s = %d (%s)", round, c.path, resp.StatusCode, resp.Header.Get("X-Error-Message"))
			}
			if got := resp.Header.Get("X-Repo-Commit"); got != commitA {
				t.Errorf("HEAD %s X-Repo-Commit = %q, want %s", c.path, got, commitA)
			}
			for _, k := range []string{"ETag", "X-Linked-Etag"} {
				if got := resp.Header.Get(k); got != `"`+c.etag+`"` {
					t.Errorf("HEAD %s %s = %q, want %q", c.path, k, got, c.etag)
				}
			}
			if resp.Header.Get("X-Linked-Size") != fmt.Sprint(len(c.data)) || resp.ContentLength != int64(len(c.data)) || resp.Header.Get("Accept-Ranges") != "bytes" {
				t.Errorf("HEAD %s sizes: linked %q length %d, want %d", c.path, resp.Header.Get("X-Linked-Size"), resp.ContentLength, len(c.data))
			}
			for k := range resp.Header {
				if strings.HasPrefix(strings.ToLower(k), "x-xet") || (k == "Link" && strings.Contains(resp.Header.Get(k), "xet")) {
					t.Errorf("HEAD %s leaks Xet header %s", c.path, k)
				}
			}
			if resp.Header.Get("Location") != "" {
				t.Errorf("HEAD %s has a Location header %q", c.path, resp.Header.Get("Location"))
			}
			resp = e.do("GET", c.path)
			if b := body(t, resp); !bytes.Equal(b, c.data) {
				t.Errorf("GET %s: wrong bytes (%d)", c.path, len(b))
			}
			// huggingface.js probes with bytes=0-0 and reads the total.
			resp = e.do("GET", c.path, "Range", "bytes=0-0")
			b := body(t, resp)
			if resp.StatusCode != 206 || len(b) != 1 || b[0] != c.data[0] || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 0-0/%d", len(c.data)) {
				t.Errorf("GET %s Range 0-0 = %d %q", c.path, resp.StatusCode, resp.Header.Get("Content-Range"))
			}
		}
	}
	if n := f.hub.CDNGets(testutil.SHA256(f.weight)); n != 1 {
		t.Errorf("CDN downloads of the LFS file = %d, want 1", n)
	}
	// Every file is one blob under blobs/sha256, named by content (the
	// commit follows the client's last, verified byte by a moment).
	for _, c := range cases {
		p := filepath.Join(e.root, "blobs/sha256", digest.FromBytes(c.data).Encoded())
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err = os.Stat(p); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("%s not stored by sha256: %v", c.path, err)
		}
	}
}

func TestHFErrorsRelayed(t *testing.T) {
	f := newHubFixture(t)
	e := hfEnv(t, f)
	cases := []struct {
		path   string
		auth   string
		status int
		code   string
	}{
		{"/org/nope/resolve/main/x", "", 401, "RepoNotFound"},
		{"/Org/Tiny/resolve/nobranch/config.json", "", 404, "RevisionNotFound"},
		{"/Org/Tiny/resolve/main/missing.bin", "", 404, "EntryNotFound"},
		{"/org/gated/resolve/main/w.bin", "", 401, "GatedRepo"},
		{"/api/models/org/nope", "", 401, "RepoNotFound"},
		{"/api/models/Org/Tiny/revision/nobranch", "", 404, "RevisionNotFound"},
		{"/api/models/Org/Tiny/xet-read-token/main", "", 404, ""},
		{"/api/whatever", "", 404, ""},
		{"/Org/../resolve/main/x", "", 400, ""},
	}
	for _, c := range cases {
		resp := e.do("GET", c.path)
		b := body(t, resp)
		if resp.StatusCode != c.status || resp.Header.Get("X-Error-Code") != c.code {
			t.Errorf("GET %s = %d %q, want %d %q (%s)", c.path, resp.StatusCode, resp.Header.Get("X-Error-Code"), c.status, c.code, b)
		}
		if !json.Valid(b) {
			t.Errorf("GET %s body is not JSON: %s", c.path, b)
		}
		if c.code == "EntryNotFound" && resp.Header.Get("X-Repo-Commit") != commitA {
			t.Errorf("EntryNotFound without X-Repo-Commit")
		}
	}
	// With the token, the gated repo opens; errors were never cached.
	resp := e.do("GET", "/org/gated/resolve/main/w.bin", "Authorization", "Bearer "+f.hub.Token)
	if body(t, resp); resp.StatusCode != 200 {
		t.Errorf("gated repo with token = %d", resp.StatusCode)
	}
}

func TestHFInfoTreeAndRevisions(t *testing.T) {
	f := newHubFixture(t)
	e := hfEnv(t, f)
	resp := e.do("GET", "/api/models/Org/Tiny/revision/main?expand=sha")
	b := body(t, resp)
	var info map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(b, &info) != nil || info["sha"] != commitA {
		t.Fatalf("info = %d %s", resp.StatusCode, b)
	}
	if _, ok := info["xetEnabled"]; ok {
		t.Errorf("info keeps xetEnabled: %s", b)
	}
	// Paginated tree: Link points at Clowder and works.
	var all []map[string]any
	next := e.srv.URL + "/api/models/Org/Tiny/tree/" + commitA + "?recursive=true"
	for pages := 0; next != ""; pages++ {
		if pages > 10 {
			t.Fatal("tree pagination does not end")
		}
		req, _ := http.NewRequest("GET", next, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := body(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("tree page %s = %d %s", next, resp.StatusCode, b)
		}
		if strings.Contains(string(b), "xetHash") {
			t.Errorf("tree keeps xetHash: %s", b)
		}
		var page []map[string]any
		json.Unmarshal(b, &page)
		all = append(all, page...)
		next = ""
		if l := resp.Header.Get("Link"); l != "" {
			next = l[strings.Index(l, "<")+1 : strings.Index(l, ">")]
			if !strings.HasPrefix(next, e.srv.URL+"/") {
				t.Errorf("Link %q does not point at Clowder %s", l, e.srv.URL)
			}
		}
	}
	if len(all) != 6 {
		t.Errorf("tree has %d entries, want 6", len(all))
	}
	// refs/pr/1, escaped as huggingface_hub sends it.
	resp = e.do("GET", "/Org/Tiny/resolve/refs%2Fpr%2F1/config.json")
	if b := body(t, resp); resp.StatusCode != 200 || string(b) != `{"pr":1}` || resp.Header.Get("X-Repo-Commit") != commitP {
		t.Errorf("refs/pr/1 = %d %s %s", resp.StatusCode, b, resp.Header.Get("X-Repo-Commit"))
	}
	if _, ok := e.names()["huggingface.co/org/tiny:refs--pr--1"]; !ok {
		t.Errorf("refs/pr/1 not named refs--pr--1: %v", e.names())
	}
	// Datasets live under datasets/.
	resp = e.do("GET", "/datasets/org/data/resolve/main/train.csv")
	if b := body(t, resp); resp.StatusCode != 200 || string(b) != "a,b\n1,2\n" {
		t.Errorf("dataset file = %d %s", resp.StatusCode, b)
	}
	if _, ok := e.names()["huggingface.co/datasets/org/data:main"]; !ok {
		t.Errorf("dataset not named: %v", e.names())
	}
}

// Warm, with the hub gone: info, tree and files still answer.
func TestHFOfflineWhenWarm(t *testing.T) {
	f := newHubFixture(t)
	e := newEnv(t, upSpec{name: "huggingface.co", url: f.hub.URL, hf: true, ttl: 0}) // revalidate every time
	paths := []string{"/api/models/Org/Tiny/revision/main", "/api/models/Org/Tiny/tree/main?recursive=true", "/Org/Tiny/resolve/main/model.safetensors", "/Org/Tiny/resolve/main/config.json"}
	want := map[string][]byte{}
	for _, p := range paths {
		resp := e.do("GET", p)
		want[p] = body(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("warm-up GET %s = %d", p, resp.StatusCode)
		}
	}
	f.hub.Server.Close()
	f.hub.CDN.Close()
	for _, p := range paths {
		resp := e.do("GET", p)
		b := body(t, resp)
		if resp.StatusCode != 200 {
			t.Errorf("offline GET %s = %d %s", p, resp.StatusCode, b)
			continue
		}
		if strings.Contains(p, "/resolve/") && !bytes.Equal(b, want[p]) {
			t.Errorf("offline GET %s: different bytes", p)
		}
		if strings.Contains(p, "/tree/") {
			var entries []map[string]any
			if json.Unmarshal(b, &entries) != nil || len(entries) < 6 {
				t.Errorf("offline tree = %s", b)
			}
		}
		if strings.Contains(p, "/revision/") && !strings.Contains(string(b), commitA) {
			t.Errorf("offline info = %s", b)
		}
	}
	// paths-info as huggingface_hub sends it (a form) and huggingface.js (JSON).
	for _, c := range []struct{ ct, body string }{
		{"application/x-www-form-urlencoded", "paths=config.json&paths=model.safetensors&paths=nope&expand=false"},
		{"application/json", `{"paths":["config.json","model.safetensors","nope"],"expand":false}`},
	} {
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/models/Org/Tiny/paths-info/main", strings.NewReader(c.body))
		req.Header.Set("Content-Type", c.ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := body(t, resp)
		var entries []map[string]any
		if resp.StatusCode != 200 || json.Unmarshal(b, &entries) != nil || len(entries) != 2 {
			t.Errorf("offline paths-info (%s) = %d %s", c.ct, resp.StatusCode, b)
			continue
		}
		if lfs, ok := entries[1]["lfs"].(map[string]any); !ok || lfs["oid"] != testutil.SHA256(f.weight) {
			t.Errorf("offline paths-info LFS entry = %v", entries[1])
		}
	}
}

// The OCI view: deterministic (same commit -> same digest, in another
// cache), layers titled with paths, LFS bytes fetched only when asked.
func TestHFOCIView(t *testing.T) {
	f := newHubFixture(t)
	var digests []string
	for i := range 2 {
		e := hfEnv(t, f)
		resp := e.do("GET", "/v2/huggingface.co/org/tiny/manifests/main", "Accept", ocispec.MediaTypeImageManifest)
		b := body(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest {
			t.Fatalf("view manifest = %d %s", resp.StatusCode, b)
		}
		digests = append(digests, resp.Header.Get("Docker-Content-Digest"))
		var m ocispec.Manifest
		json.Unmarshal(b, &m)
		if m.ArtifactType != proxy.MediaTypeAimageManifest || len(m.Layers) != 6 {
			t.Fatalf("view = %s", b)
		}
		titles := map[string]ocispec.Descriptor{}
		for _, l := range m.Layers {
			titles[l.Annotations[ocispec.AnnotationTitle]] = l
		}
		g := titles["tiny.Q4.gguf"]
		if g.MediaType != proxy.MediaTypeGGUF || g.Digest != digest.FromBytes(f.gguf) {
			t.Errorf("gguf layer = %+v", g)
		}
		if i == 0 {
			if n := f.hub.CDNGets(testutil.SHA256(f.gguf)); n != 0 {
				t.Errorf("building the view downloaded the LFS file %d times", n)
			}
			resp = e.do("GET", "/v2/huggingface.co/org/tiny/blobs/"+g.Digest.String())
			if b := body(t, resp); !bytes.Equal(b, f.gguf) {
				t.Errorf("view layer blob: %d %d bytes", resp.StatusCode, len(b))
			}
			// By commit too, and the name is in index.json.
			resp = e.do("GET", "/v2/huggingface.co/org/tiny/manifests/"+commitA)
			body(t, resp)
			if resp.Header.Get("Docker-Content-Digest") != digests[0] {
				t.Errorf("view by commit digest %s, by main %s", resp.Header.Get("Docker-Content-Digest"), digests[0])
			}
			for _, n := range []string{"huggingface.co/org/tiny:main", "huggingface.co/org/tiny:" + commitA} {
				if _, ok := e.names()[n]; !ok {
					t.Errorf("%s not in index.json", n)
				}
			}
		}
	}
	if digests[0] != digests[1] || digests[0] == "" {
		t.Errorf("view digests differ between caches: %v", digests)
	}
}

// A GGUF that arrives via Hugging Face, ollama and an OCI artifact is one
// file on disk.
func TestDedupAcrossProtocols(t *testing.T) {
	f := newHubFixture(t)
	o := testutil.NewOllamaRegistry(t)
	m := testutil.NewOllamaModelFrom(f.gguf) // the same GGUF the hub serves
	o.Add("library/tiny:latest", m)
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	art := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.clowder.test","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/octet-stream","digest":"%s","size":%d,"annotations":{"org.opencontainers.image.title":"tiny.gguf"}}]}`,
		digest.FromBytes([]byte("{}")), digest.FromBytes(f.gguf), len(f.gguf)))
	testutil.PushRaw(t, reg.DirectHost, "models/tiny", "1", art, map[digest.Digest][]byte{digest.FromBytes([]byte("{}")): []byte("{}"), digest.FromBytes(f.gguf): f.gguf})
	e := newEnv(t,
		upSpec{name: "huggingface.co", url: f.hub.URL, hf: true, ttl: time.Hour},
		upSpec{name: "registry.ollama.ai", url: o.Server.URL, ollama: true, ttl: time.Hour},
		upSpec{name: "corp", url: "http://" + reg.Host, ttl: time.Hour},
	)
	for _, p := range []string{
		"/Org/Tiny/resolve/main/tiny.Q4.gguf",
		"/v2/registry.ollama.ai/library/tiny/blobs/" + digest.FromBytes(f.gguf).String(),
		"/v2/corp/models/tiny/blobs/" + digest.FromBytes(f.gguf).String(),
	} {
		resp := e.do("GET", p)
		if b := body(t, resp); resp.StatusCode != 200 || !bytes.Equal(b, f.gguf) {
			t.Fatalf("GET %s = %d", p, resp.StatusCode)
		}
	}
	gguf := filepath.Join(e.root, "blobs/sha256", digest.FromBytes(f.gguf).Encoded())
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(gguf); err == nil {
			break // the commit follows the verified last byte
		}
	}
	n := 0
	for _, file := range e.blobFiles() {
		if filepath.Base(file) == digest.FromBytes(f.gguf).Encoded() {
			n++
		}
	}
	if n != 1 {
		t.Errorf("GGUF stored %d times, want once", n)
	}
	if f.hub.CDNGets(testutil.SHA256(f.gguf)) != 1 {
		t.Errorf("GGUF fetched from the hub %d times", f.hub.CDNGets(testutil.SHA256(f.gguf)))
	}
	if full, _ := o.StoreGets(digest.FromBytes(f.gguf)); full != 0 {
		t.Errorf("GGUF fetched again from ollama %d times", full)
	}
	_ = io.Discard
}
