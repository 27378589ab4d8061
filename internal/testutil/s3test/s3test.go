// Package s3test gives tests an S3 endpoint: the real engine named by
// CLOWDER_S3_ENDPOINT (SeaweedFS, started by `make test-s3`), or else an
// in-process fake (gofakes3 on loopback) so the s3 backend's logic is
// covered by a plain `go test ./...` too.
//
// The fake keeps objects in memory and honours the conditional writes the
// backend depends on (If-None-Match: * and If-Match on PutObject), but it is
// not an S3 engine: the integration tier runs on SeaweedFS.
package s3test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Bucket is the one bucket every test shares; each test takes a key prefix
// of its own (an engine on a small disk has room for few buckets).
const Bucket = "clowder-test"

// Endpoint describes where an S3 engine answers and with which keys.
type Endpoint struct {
	URL, AccessKey, SecretKey string
	// Real is true when URL is a real engine (CLOWDER_S3_ENDPOINT).
	Real bool
}

var (
	realOnce sync.Once
	realErr  error
	fakeOnce sync.Once
	fake     Endpoint
	fakeErr  error
)

// Get returns the engine tests should use. The fake lives for the rest of
// the test binary: tests share it as they would share a real engine.
func Get(t testing.TB) Endpoint {
	t.Helper()
	if ep := os.Getenv("CLOWDER_S3_ENDPOINT"); ep != "" {
		real := Endpoint{URL: ep, AccessKey: os.Getenv("CLOWDER_S3_ACCESS_KEY"), SecretKey: os.Getenv("CLOWDER_S3_SECRET_KEY"), Real: true}
		realOnce.Do(func() { realErr = makeBucket(real) })
		if realErr != nil {
			t.Fatalf("s3test: bucket %s on %s: %v", Bucket, ep, realErr)
		}
		return real
	}
	fakeOnce.Do(func() {
		backend := s3mem.New()
		if fakeErr = backend.CreateBucket(Bucket); fakeErr != nil {
			return
		}
		// gofakes3 does not check signatures: any key pair is accepted.
		srv := httptest.NewServer(gofakes3.New(backend).Server())
		fake = Endpoint{URL: srv.URL, AccessKey: "fake", SecretKey: "fake-secret"}
	})
	if fakeErr != nil {
		t.Fatalf("s3test: in-process fake: %v", fakeErr)
	}
	return fake
}

// makeBucket creates Bucket on a real engine unless it exists.
func makeBucket(ep Endpoint) error {
	u, err := url.Parse(ep.URL)
	if err != nil {
		return err
	}
	c, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(ep.AccessKey, ep.SecretKey, ""), Secure: u.Scheme == "https"})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if ok, err := c.BucketExists(ctx, Bucket); err != nil || ok {
		return err
	}
	if err := c.MakeBucket(ctx, Bucket, minio.MakeBucketOptions{}); err != nil {
		if ok, _ := c.BucketExists(ctx, Bucket); ok {
			return nil // made meanwhile by another test binary
		}
		return err
	}
	return nil
}

// Front is a reverse proxy in front of an engine that can play an outage:
// while Down is set every request is answered 503 and counted in Asked.
type Front struct {
	URL   string
	Down  atomic.Bool
	Asked atomic.Int32
}

// NewFront starts a Front before ep, closed when the test ends.
func NewFront(t testing.TB, ep Endpoint) *Front {
	t.Helper()
	target, err := url.Parse(ep.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &Front{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.Down.Load() {
			f.Asked.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}
