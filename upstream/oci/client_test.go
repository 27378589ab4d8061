package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/clowder-dev/clowder/upstream"
)

// A manifest nested past upstream.MaxJSONDepth is refused with ErrTooDeep.
func TestManifestTooDeep(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		fmt.Fprint(w, deep)
	}))
	defer srv.Close()
	c, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Manifest(context.Background(), "x/y", "latest"); !errors.Is(err, upstream.ErrTooDeep) {
		t.Fatalf("Manifest of a %d-deep document = %v, want ErrTooDeep", 100, err)
	}
}

// The token flow sends the upstream's credentials to the realm it names,
// but not over plain http when the upstream itself is https.
func TestRealmCredentialsNotDowngraded(t *testing.T) {
	var withAuth atomic.Int32
	token := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			withAuth.Add(1)
		}
		fmt.Fprint(w, `{"token":"t"}`)
	}))
	defer token.Close()
	reg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+token.URL+`/token",service="s"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("a", 64))
	}))
	defer reg.Close()
	c, err := New(reg.URL, Options{Transport: reg.Client().Transport, Credentials: func(string) (string, string, bool) { return "alice", "s3cret", true }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resolve(context.Background(), "x/y", "latest"); err != nil {
		t.Fatal(err)
	}
	if n := withAuth.Load(); n != 0 {
		t.Fatalf("credentials of an https upstream went to an http realm %d times", n)
	}
}
