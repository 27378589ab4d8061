package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// listTree returns every path under dir (relative), skipping skip.
func listTree(dir, skip string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		if p == skip {
			return fs.SkipDir
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	return out
}

// pushArtifact pushes an oras-style artifact whose layers carry titles.
func pushArtifact(t *testing.T, host, repo, tag string, titles ...string) {
	t.Helper()
	blobs := map[digest.Digest][]byte{}
	cfg := []byte("{}")
	blobs[digest.FromBytes(cfg)] = cfg
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.hostile",
		Config: ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromBytes(cfg), Size: 2}}
	m.SchemaVersion = 2
	for i, title := range titles {
		b := []byte(fmt.Sprintf("file %d\n", i))
		blobs[digest.FromBytes(b)] = b
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(b), Size: int64(len(b)),
			Annotations: map[string]string{ocispec.AnnotationTitle: title}})
	}
	mb, _ := json.Marshal(m)
	testutil.PushRaw(t, host, repo, tag, mb, blobs)
}

// clowder checkout of an artifact whose titles climb out of the directory
// (relative, absolute, through a subdirectory, Windows-style) refuses the
// whole artifact and creates nothing, inside or outside the directory; a
// hub tree with such a path is refused by clowder pull hf:// alike.
func TestCheckoutHostileTitles(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	hub := testutil.NewHub(t)
	commit := strings.Repeat("d", 40)
	hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/Evil", Refs: map[string]string{"main": commit},
		Commits: map[string]map[string]testutil.HubFile{commit: {"../../../escaped-hf": {Data: []byte("x")}, "ok.txt": {Data: []byte("y")}}}})
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: reg, url: 'http://%s'}\n  - {name: huggingface.co, type: huggingface, url: '%s'}\n", reg.Host, hub.URL))
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	abs := filepath.Join(parent, "abs-escaped")
	for i, bad := range []string{"../../escaped", abs, "a/../../escaped", "sub/../../../escaped", `..\..\escaped`, "./x", "a//b", "x\x00y"} {
		tag := fmt.Sprint(i)
		pushArtifact(t, reg.DirectHost, "art/hostile", tag, "ok.txt", "sub/fine.bin", bad)
		if out, err := run(t, "pull", "--config", cfg, "--root", root, "reg/art/hostile:"+tag); err != nil {
			t.Fatalf("clowder pull of the artifact = %v\n%s", err, out)
		}
		dir := filepath.Join(parent, "out", "co"+tag)
		out, err := run(t, "checkout", "--config", cfg, "--root", root, "reg/art/hostile:"+tag, dir)
		if err == nil || !strings.Contains(out, "would leave") {
			t.Errorf("checkout with title %q = %v\n%s", bad, err, out)
		}
		if got := listTree(filepath.Join(parent, "out"), ""); len(got) != 0 {
			t.Errorf("checkout with title %q created %v", bad, got)
		}
	}
	if out, err := run(t, "pull", "--config", cfg, "--root", root, "hf://Org/Evil"); err == nil || !strings.Contains(out, "unsafe path") {
		t.Errorf("clowder pull of a hub tree with ../ = %v\n%s", err, out)
	}
	for _, p := range listTree(parent, root) {
		if p != "out" {
			t.Errorf("found %s outside the root", p)
		}
	}
	// A good artifact still checks out.
	pushArtifact(t, reg.DirectHost, "art/good", "1", "ok.txt", "sub/fine.bin")
	dir := filepath.Join(parent, "good")
	if out, err := run(t, "pull", "--config", cfg, "--root", root, "reg/art/good:1"); err != nil {
		t.Fatalf("clowder pull of the good artifact = %v\n%s", err, out)
	}
	if out, err := run(t, "checkout", "--config", cfg, "--root", root, "reg/art/good:1", dir); err != nil {
		t.Fatalf("checkout of a good artifact = %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "sub", "fine.bin")); err != nil || string(b) != "file 1\n" {
		t.Fatalf("checked out file = %q, %v", b, err)
	}
}

// The upstream password and the Hugging Face token configured for Clowder
// are never logged (at debug), never echoed in an answer, never sent to
// another host (the CDN) and never stored under the cache root, after pulls
// that succeed and requests that fail.
func TestCredentialsNeverLeak(t *testing.T) {
	const pass, token = "pw-Leakcheck-7c1e", "hf_Leakcheck9d2b0000"
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true, Username: "alice", Password: pass})
	testutil.PushImage(t, reg.DirectHost, "private/img", "1", 2, 2048)
	hub := testutil.NewHub(t) // its CDN fails the test on any Authorization header
	hub.Token = token
	commit := strings.Repeat("f", 40)
	lfs := bytes.Repeat([]byte{3}, 30000)
	hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/Gated", Gated: true, Refs: map[string]string{"main": commit},
		Commits: map[string]map[string]testutil.HubFile{commit: {"config.json": {Data: []byte(`{"a":1}`)}, "model.bin": {Data: lfs, LFS: true}}}})
	cfg := writeConfig(t, fmt.Sprintf(`log_level: debug
upstreams:
  - {name: reg, url: 'http://%s', username: alice, password: '%s'}
  - {name: huggingface.co, type: huggingface, url: '%s', token: '%s'}
`, reg.Host, pass, hub.URL, token))
	root := t.TempDir()
	p := startServe(t, cfg, root)
	base := "http://" + p.addr
	secrets := []string{pass, token, base64.StdEncoding.EncodeToString([]byte("alice:" + pass))}
	var answers bytes.Buffer
	fetch := func(path string, hdr ...string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		resp.Header.Write(&answers)
		answers.Write(b)
		return resp.StatusCode
	}
	if s := fetch("/v2/reg/private/img/manifests/1"); s != 200 {
		t.Fatalf("manifest with upstream credentials = %d", s)
	}
	var m ocispec.Manifest
	_ = json.Unmarshal(answers.Bytes()[bytes.IndexByte(answers.Bytes(), '{'):], &m)
	for _, l := range append(m.Layers, m.Config) {
		// Whether content fetched with the proxy's credentials is served
		// to this client is the access rules' business; either way no
		// answer may carry a credential.
		fetch("/v2/reg/private/img/blobs/" + l.Digest.String())
	}
	fetch("/Org/Gated/resolve/main/model.bin", "Authorization", "Bearer "+token)
	for _, path := range []string{
		"/Org/Gated/resolve/main/config.json", "/Org/Gated/resolve/main/model.bin", "/api/models/Org/Gated", "/api/models/Org/Gated/tree/main",
		"/v2/reg/private/nope/manifests/1", "/v2/reg/private/img/manifests/nope", "/Org/Gated/resolve/main/missing", "/api/models/Org/Nope",
	} {
		fetch(path)
	}
	// clowder pull fetches every blob with the credentials (debug logs).
	if out, err := run(t, "pull", "--config", cfg, "--root", root, "--log-level", "debug", "reg/private/img:1"); err != nil {
		t.Fatalf("clowder pull = %v\n%s", err, out)
	} else {
		answers.WriteString(out)
	}
	p.kill()

	for _, s := range secrets {
		if strings.Contains(p.log.String(), s) {
			t.Errorf("the log holds a credential (%.6s...)", s)
		}
		if strings.Contains(answers.String(), s) {
			t.Errorf("an answer or clowder pull's output holds a credential (%.6s...)", s)
		}
	}
	_ = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s under the cache root holds a credential (%.6s...)", path, s)
			}
		}
		return nil
	})
	if hub.CDNGets(testutil.SHA256(lfs)) == 0 {
		t.Error("the gated LFS file never went through the CDN (the test proves nothing)")
	}
	if !strings.Contains(p.log.String(), `"status":404`) {
		t.Error("no failing request was logged (the test proves less than it says)")
	}
}

// allow_private_hosts reaches the guard through the config: a registry
// whose token realm is on another loopback address is refused with an
// error naming the key, then works once the address is listed.
func TestAllowPrivateHostsConfig(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true}) // realm on 127.0.0.1
	testutil.PushImage(t, reg.DirectHost, "lib/img", "1", 1, 512)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	tu, _ := url.Parse(reg.Server.URL)
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(tu))
	front.Listener = ln
	front.Start()
	t.Cleanup(front.Close)

	refused := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: reg, url: '%s'}\n", front.URL))
	out, err := run(t, "pull", "--config", refused, "--root", t.TempDir(), "reg/lib/img:1")
	if err == nil || !strings.Contains(out, "allow_private_hosts") || !strings.Contains(out, "127.0.0.1") {
		t.Fatalf("pull with the realm on an unlisted private host = %v\n%s", err, out)
	}
	allowed := writeConfig(t, fmt.Sprintf("allow_private_hosts: ['127.0.0.1']\nupstreams:\n  - {name: reg, url: '%s'}\n", front.URL))
	if out, err := run(t, "pull", "--config", allowed, "--root", t.TempDir(), "reg/lib/img:1"); err != nil {
		t.Fatalf("pull with the realm's host allowed = %v\n%s", err, out)
	}
	bad := writeConfig(t, "allow_private_hosts: ['http://10.0.0.7:5001']\n")
	if out, err := run(t, "config", "check", "--config", bad); err == nil || !strings.Contains(out, "allow_private_hosts[0]") {
		t.Fatalf("config check with a URL in allow_private_hosts = %v\n%s", err, out)
	}
}
