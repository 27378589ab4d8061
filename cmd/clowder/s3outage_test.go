package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	s3creds "github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/internal/testutil/s3test"
)

// A replica on the s3 backend keeps serving pulls while its bucket is
// down (every request answered 503): warm ones from its local copies, and
// cold ones from the upstream, their blobs kept locally until the bucket
// takes them and their names written on the next pull once it is back.
func TestS3BucketOutagePulls(t *testing.T) {
	ep := s3test.Get(t)
	front := s3test.NewFront(t, ep)
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, reg.DirectHost, "lib/warm", "1", 1, 4096)
	cold := testutil.PushImage(t, reg.DirectHost, "lib/cold", "1", 1, 4096)
	wantCold, _ := cold.Digest()
	prefix := fmt.Sprintf("outage-%d/", time.Now().UnixNano())
	cfg := writeConfig(t, fmt.Sprintf(`upstreams:
  - {name: reg, url: 'http://%s'}
storage:
  type: s3
  s3: {endpoint: '%s', bucket: %s, prefix: '%s', access_key: %s, secret_key: %s}
local_cache_size: 1GiB
`, reg.Host, front.URL, s3test.Bucket, prefix, ep.AccessKey, ep.SecretKey))
	p := startServe(t, cfg, t.TempDir())
	if _, _, err := pullThrough("http://"+p.addr, "reg/lib/warm", "1"); err != nil {
		t.Fatalf("warm pull: %v", err)
	}

	front.Down.Store(true)
	if _, _, err := pullThrough("http://"+p.addr, "reg/lib/warm", "1"); err != nil {
		t.Errorf("warm pull, bucket down: %v", err)
	}
	if d, _, err := pullThrough("http://"+p.addr, "reg/lib/cold", "1"); err != nil || d != wantCold.String() {
		t.Errorf("cold pull, bucket down = %s, %v; want %s", d, err, wantCold)
	}
	// Once it failed to answer, the bucket is left alone for a while
	// (no lease, stat or upload per blob, each with the S3 client's 5
	// attempts): two pulls, four blobs, well under one round per blob.
	if n := front.Asked.Load(); n > 25 {
		t.Errorf("the bucket got %d requests during the outage, want the fill path to stop asking after the first failures", n)
	}
	if !strings.Contains(p.log.String(), "manifest served but not named") {
		t.Errorf("no warning that reg/lib/cold:1 went unnamed:\n%s", lastLines(p.log.String(), 10))
	}

	front.Down.Store(false)
	if _, _, err := pullThrough("http://"+p.addr, "reg/lib/cold", "1"); err != nil {
		t.Fatalf("cold pull, bucket back: %v", err)
	}
	target, _ := url.Parse(ep.URL)
	c, err := minio.New(target.Host, &minio.Options{Creds: s3creds.NewStaticV4(ep.AccessKey, ep.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := c.GetObject(context.Background(), s3test.Bucket, prefix+"index.json", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !strings.Contains(string(idx), `"reg/lib/cold:1"`) || !strings.Contains(string(idx), wantCold.String()) {
		t.Errorf("bucket index.json after the outage = %s, %v; want reg/lib/cold:1 -> %s", idx, err, wantCold)
	}
	// Its deferred upload is offered again as soon as the bucket answers.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := c.StatObject(context.Background(), s3test.Bucket, prefix+"blobs/sha256/"+wantCold.Hex, minio.StatObjectOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cold manifest not in the bucket 15 s after the outage (deferred uploads retry every 30 s unless the bucket is seen back): %v", err)
		}
	}
}
