package oci

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// A path in the upstream URL is a repository prefix (a site Clowder's
// upstream name): it goes after /v2/ in every registry URL, and into the
// token scope, whatever the challenge leaves out.
func TestURLPathIsRepositoryPrefix(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":2},"layers":[]}`)
	md := digest.FromBytes(manifest)
	blob := []byte("layer bytes")
	bd := digest.FromBytes(blob)

	var mu sync.Mutex
	var paths, scopes []string
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/token" {
			if u, p, ok := r.BasicAuth(); !ok || u != "worker" || p != "pw" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			mu.Lock()
			scopes = append(scopes, r.URL.Query()["scope"]...)
			mu.Unlock()
			fmt.Fprint(w, `{"token":"tok","expires_in":300}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer tok" {
			// No scope in the challenge: the client must name the
			// repository as this registry sees it, prefix included.
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="clowder"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/v2/docker.io/library/alpine/manifests/3.20", "/v2/docker.io/library/alpine/manifests/" + md.String():
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", md.String())
			w.Header().Set("Content-Length", fmt.Sprint(len(manifest)))
			if r.Method == http.MethodGet {
				w.Write(manifest)
			}
		case "/v2/docker.io/library/alpine/blobs/" + bd.String():
			w.Write(blob)
		case "/v2/docker.io/library/alpine/tags/list":
			w.Header().Set("Link", `</v2/docker.io/library/alpine/tags/list?last=3.20&n=1>; rel="next"`)
			fmt.Fprint(w, `{"name":"docker.io/library/alpine","tags":["3.20"]}`)
		case "/v2/docker.io/library/alpine/referrers/" + md.String():
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			fmt.Fprint(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errors":[{"code":"NAME_UNKNOWN"}]}`)
		}
	}))
	defer srv.Close()

	for _, base := range []string{srv.URL + "/docker.io", srv.URL + "/docker.io/"} {
		paths, scopes = nil, nil
		c, err := New(base, Options{Credentials: func(host string) (string, string, bool) {
			if host != strings.TrimPrefix(srv.URL, "http://") {
				t.Errorf("credentials asked for host %q, want the URL's host", host)
			}
			return "worker", "pw", true
		}})
		if err != nil {
			t.Fatal(err)
		}
		if c.Prefix() != "docker.io" || c.Remote("library/alpine") != "docker.io/library/alpine" {
			t.Fatalf("New(%q): Prefix() = %q, Remote(library/alpine) = %q", base, c.Prefix(), c.Remote("library/alpine"))
		}
		ctx := context.Background()
		d, err := c.Resolve(ctx, "library/alpine", "3.20")
		if err != nil || d.Digest != md {
			t.Fatalf("Resolve = %v, %v; want %s", d.Digest, err, md)
		}
		if _, b, err := c.Manifest(ctx, "library/alpine", md.String()); err != nil || string(b) != string(manifest) {
			t.Fatalf("Manifest by digest = %v", err)
		}
		rc, _, _, err := c.Blob(ctx, "library/alpine", bd, 0)
		if err != nil {
			t.Fatalf("Blob = %v", err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != string(blob) {
			t.Errorf("Blob = %q, want %q", got, blob)
		}
		tags, next, err := c.Tags(ctx, "library/alpine", "n=1")
		if err != nil || len(tags) != 1 || next != "last=3.20&n=1" {
			t.Errorf("Tags = %v, %q, %v; want [3.20], last=3.20&n=1", tags, next, err)
		}
		if _, err := c.Referrers(ctx, "library/alpine", md, ""); err != nil {
			t.Errorf("Referrers = %v", err)
		}
		if err := c.BlobExists(ctx, "library/alpine", bd); err != nil {
			t.Errorf("BlobExists = %v", err)
		}
		for _, p := range paths {
			if _, path, _ := strings.Cut(p, " "); path != "/token" && !strings.HasPrefix(path, "/v2/docker.io/library/alpine/") {
				t.Errorf("request %s: want every registry URL under /v2/docker.io/", p)
			}
		}
		if len(scopes) != 1 || scopes[0] != "repository:docker.io/library/alpine:pull" {
			t.Errorf("token scopes = %q, want [repository:docker.io/library/alpine:pull]", scopes)
		}
	}
}

// A URL without a path sends names as they are (unchanged behaviour), and
// a multi-segment prefix is kept whole.
func TestURLPrefixForms(t *testing.T) {
	for _, c := range []struct{ base, repo, want string }{
		{"http://h:5000", "library/alpine", "http://h:5000/v2/library/alpine/manifests/1"},
		{"http://h:5000/", "library/alpine", "http://h:5000/v2/library/alpine/manifests/1"},
		{"http://h:5000/corp/mirror", "team/x", "http://h:5000/v2/corp/mirror/team/x/manifests/1"},
	} {
		cl, err := New(c.base, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := cl.url(c.repo, "manifests", "1"); got != c.want {
			t.Errorf("New(%q).url(%q) = %s, want %s", c.base, c.repo, got, c.want)
		}
		if a := cl.Anonymous(); a.url(c.repo, "manifests", "1") != c.want {
			t.Errorf("New(%q).Anonymous() lost the prefix: %s", c.base, a.url(c.repo, "manifests", "1"))
		}
	}
	for _, bad := range []string{"http://h/a%2Fb", "http://h/a//b"} {
		if _, err := New(bad, Options{}); err == nil {
			t.Errorf("New(%q) = nil error, want the path refused", bad)
		}
	}
}
