package server_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/proxy"
)

const secret = "TOPSECRET-do-not-serve-7f3a"

// snapshotOutside maps every path under dir, except root and what is below
// it, to its type and content hash.
func snapshotOutside(t *testing.T, dir, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p == root {
			return fs.SkipDir
		}
		v := e.Type().String()
		if e.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			s := sha256.Sum256(b)
			v += hex.EncodeToString(s[:])
		}
		out[p] = v
		return nil
	})
	return out
}

// rawRequest sends exactly target on the request line (no client-side
// cleaning or escaping) and returns the status and body.
func rawRequest(t *testing.T, host, method, target, body string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n%s", method, target, host, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Traversal in every route that takes a name or a file path (OCI names,
// tags, digests, upload ids, mount sources, HF repo ids, revisions, file
// paths, paths-info bodies), as "..", "%2e%2e", "%2F", absolute paths and
// NUL, plain and encoded: nothing outside the root is created, changed or
// read, no upstream is asked for a path with "..", and no answer is a 500.
func TestPathTraversal(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	if err := os.WriteFile(filepath.Join(parent, "secret"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(parent, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}

	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img := testutil.PushImage(t, reg.DirectHost, "library/alpine", "1", 1, 512)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	layer := ld.String()
	hub := testutil.NewHub(t)
	commit := strings.Repeat("e", 40)
	hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/M", Refs: map[string]string{"main": commit},
		Commits: map[string]map[string]testutil.HubFile{commit: {"config.json": {Data: []byte(`{"a":1}`)}}}})
	// A hostile hub: its tree lists a file that climbs out of any checkout.
	hub.Add(&testutil.HubRepo{Type: "model", ID: "Org/Evil", Refs: map[string]string{"main": commit},
		Commits: map[string]map[string]testutil.HubFile{commit: {"../../../secret2": {Data: []byte("x")}, "ok.txt": {Data: []byte("y")}}}})

	e := newGuardedEnv(t, root, nil, proxy.Options{}, upSpec{name: "docker.io", url: reg.Server.URL, def: true, ttl: time.Hour}, upSpec{name: "huggingface.co", url: hub.URL, hf: true})
	// Warm content, so that reads have something to climb from.
	if resp := e.do("GET", "/v2/library/alpine/manifests/1"); resp.StatusCode != 200 {
		t.Fatalf("warm manifest: %d", resp.StatusCode)
	}
	if resp := e.do("GET", "/Org/M/resolve/main/config.json"); resp.StatusCode != 200 {
		t.Fatalf("warm hub file: %d", resp.StatusCode)
	}
	before := snapshotOutside(t, parent, root)

	d := digest.FromString("x").String()
	uid := strings.Repeat("0", 32)
	dots := []string{"..", "%2e%2e", "%2E%2E", ".%2e", "..%2f..", "..%2F..%2F..", "%2e%2e%2f%2e%2e%2f%2e%2e"}
	var targets [][3]string // method, target, body
	add := func(method, target string, body ...string) {
		b := ""
		if len(body) > 0 {
			b = body[0]
		}
		targets = append(targets, [3]string{method, target, b})
	}
	for _, dd := range dots {
		up := dd + "/" + dd + "/" + dd
		// OCI names, tags, digests, referrers.
		add("GET", "/v2/"+up+"/secret/manifests/latest")
		add("GET", "/v2/library/"+up+"/manifests/1")
		add("GET", "/v2/library/alpine/manifests/"+up+"%2Fsecret")
		add("HEAD", "/v2/library/alpine/manifests/"+dd)
		add("GET", "/v2/library/alpine/blobs/sha256:"+up+"%2Fsecret")
		add("GET", "/v2/library/alpine/blobs/"+up+"/secret")
		add("GET", "/v2/library/alpine/referrers/sha256:"+dd)
		add("GET", "/v2/library/alpine/tags/list?n=1&last="+up+"%2Fsecret")
		add("GET", "/v2/docker.io/"+up+"/blobs/"+layer)
		add("GET", "/v2/"+dd+"/blobs/"+layer+"?ns=docker.io")
		// Hosted: names, tags, upload ids, mounts.
		add("PUT", "/v2/local/"+up+"/secret/manifests/x", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
		add("PUT", "/v2/local/a/manifests/"+up+"%2Fsecret", `{}`)
		add("POST", "/v2/local/"+up+"/blobs/uploads/")
		add("POST", "/v2/local/a/blobs/uploads/?mount="+d+"&from=local/"+up)
		add("POST", "/v2/local/a/blobs/uploads/?mount=sha256:"+up+"&from=local/b")
		add("PATCH", "/v2/local/a/blobs/uploads/"+up+"/secret", "x")
		add("PUT", "/v2/local/a/blobs/uploads/"+up+"%2Fsecret?digest="+d, "x")
		add("GET", "/v2/local/a/blobs/uploads/"+uid+"/"+dd)
		add("DELETE", "/v2/local/a/blobs/uploads/"+dd)
		add("DELETE", "/v2/local/"+up+"/manifests/x")
		add("DELETE", "/v2/local/a/blobs/sha256:"+up)
		add("GET", "/v2/local/"+up+"/tags/list")
		add("GET", "/v2/_catalog?last="+up)
		// Hugging Face: repo ids, revisions, file paths.
		add("GET", "/api/models/"+up+"/secret")
		add("GET", "/api/models/"+dd+"/"+dd+"/revision/main")
		add("GET", "/api/models/Org/M/revision/"+up+"%2Fsecret")
		add("GET", "/api/models/Org/M/tree/main/"+up+"/secret")
		add("GET", "/api/models/Org/M/tree/"+up)
		add("GET", "/api/datasets/"+dd+"/x/tree/main")
		add("POST", "/api/models/Org/M/paths-info/main", `{"paths":["../../secret","/etc/passwd","..%2F..%2Fsecret","a/../../secret"]}`)
		add("POST", "/api/models/Org/M/paths-info/"+up, `{"paths":["x"]}`)
		add("GET", "/Org/M/resolve/main/"+up+"/secret")
		add("HEAD", "/Org/M/resolve/main/"+up+"%2Fsecret")
		add("GET", "/Org/M/resolve/"+up+"/config.json")
		add("GET", "/"+dd+"/"+dd+"/resolve/main/secret")
		add("GET", "/datasets/"+up+"/resolve/main/x")
		add("GET", "/"+up+"/secret")
	}
	for _, abs := range []string{"%2Fetc%2Fpasswd", "/etc/passwd", "%2F" + strings.ReplaceAll(strings.TrimPrefix(parent, "/"), "/", "%2F") + "%2Fsecret"} {
		add("GET", "/v2/library/alpine/manifests/"+abs)
		add("GET", "/v2/"+abs+"/manifests/1")
		add("GET", "/Org/M/resolve/main/"+abs)
		add("GET", "/api/models/Org/M/tree/main/"+abs)
		add("PUT", "/v2/local/a/manifests/"+abs, `{}`)
	}
	for _, nul := range []string{"%00", "a%00b", "%00..%2F"} {
		add("GET", "/v2/library/alpine/manifests/"+nul)
		add("GET", "/v2/library/al"+nul+"pine/manifests/1")
		add("GET", "/Org/M/resolve/main/config.json"+nul)
		add("GET", "/Org/M/resolve/"+nul+"/config.json")
		add("GET", "/api/models/Org/M"+nul+"/revision/main")
		add("POST", "/v2/local/a"+nul+"/blobs/uploads/")
	}

	// A %2F inside a repo id would put another hub endpoint under the
	// repo's path, called with the proxy's token.
	add("GET", "/api/models/Org/M%2Fdiscussions")
	add("GET", "/api/models/Org%2FM%2Fdiscussions/revision/main")
	add("GET", "/Org/M%2Fdiscussions/resolve/main/config.json")

	for _, tg := range targets {
		status, b := rawRequest(t, e.host, tg[0], tg[1], tg[2])
		if status >= 500 && status != http.StatusBadGateway || status == 0 {
			t.Errorf("%s %s = %d %.200s", tg[0], tg[1], status, b)
		}
		if strings.Contains(b, secret) {
			t.Fatalf("%s %s served the secret outside the root", tg[0], tg[1])
		}
	}
	// The hostile hub's tree is refused whole: nothing of it is served.
	if status, b := rawRequest(t, e.host, "GET", "/Org/Evil/resolve/main/ok.txt", ""); status != http.StatusBadGateway || !strings.Contains(b, "unsafe path") {
		t.Errorf("a repo whose tree climbs out = %d %s, want 502 unsafe path", status, b)
	}

	if after := snapshotOutside(t, parent, root); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("files outside the root changed:\nbefore %v\nafter  %v", before, after)
	}
	for _, l := range append(reg.Log(), hub.Requests()...) {
		path, _, _ := strings.Cut(l, "?")
		if strings.Contains(path, "discussions") || strings.Contains(path, "/../") || strings.HasSuffix(path, "/..") || strings.Contains(strings.ToLower(path), "%2e%2e") {
			t.Errorf("an upstream was asked for %q", l)
		}
	}
	// What was legitimate still works.
	if resp := e.do("GET", "/Org/M/resolve/main/config.json"); resp.StatusCode != 200 {
		t.Errorf("hub file after the hostile requests: %d", resp.StatusCode)
	}
}
