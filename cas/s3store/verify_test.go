package s3store_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/cas/s3store"
	"github.com/clowder-dev/clowder/internal/testutil/s3test"
)

// clowder verify hashes the bucket's objects, not a replica's local copies
// of them: a blob damaged in the bucket is found (and, with repair,
// removed) even where the replica running verify holds a good local copy.
func TestS3VerifyReadsTheBucket(t *testing.T) {
	loc := freshBucket()
	s := openStore(t, loc, s3store.Options{LocalCacheSize: 1 << 20})
	ctx := context.Background()
	data := []byte("verified in the bucket")
	d := digest.FromBytes(data)
	if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytesReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Local().Stat(ctx, d); err != nil {
		t.Fatalf("local copy with local_cache_size: %v", err)
	}
	// Damage the bucket's object behind the replica's back.
	bucket, prefix, _ := strings.Cut(loc, "/")
	ep := s3test.Get(t)
	c, err := minio.New(strings.TrimPrefix(ep.URL, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(ep.AccessKey, ep.SecretKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := "damaged"
	if _, err := c.PutObject(ctx, bucket, prefix+"blobs/sha256/"+d.Encoded(), strings.NewReader(bad), int64(len(bad)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []cas.VerifyResult
	if err := cas.VerifyStore(ctx, s, true, func(r cas.VerifyResult) { got = append(got, r) }); err != nil {
		t.Fatalf("VerifyStore = %v", err)
	}
	if len(got) != 1 || got[0].Err == nil || !got[0].Removed {
		t.Fatalf("VerifyStore(repair) = %+v, want %s damaged and removed", got, d)
	}
	if _, err := c.StatObject(ctx, bucket, prefix+"blobs/sha256/"+d.Encoded(), minio.StatObjectOptions{}); err == nil {
		t.Errorf("damaged object still in the bucket after repair")
	}
}

// A replica with a local cache copies what it reads from the bucket through
// the verified ingest path: a damaged object is found there and removed
// from the bucket, so the next request is a miss that fills it again.
func TestS3DamagedObjectRemovedWhenCopied(t *testing.T) {
	loc := freshBucket()
	ctx := context.Background()
	data := []byte("copied and checked")
	d := digest.FromBytes(data)
	if _, err := cas.Ingest(ctx, newStore(t, loc), ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytesReader(data)); err != nil {
		t.Fatal(err)
	}
	bucket, prefix, _ := strings.Cut(loc, "/")
	ep := s3test.Get(t)
	c, err := minio.New(strings.TrimPrefix(ep.URL, "http://"), &minio.Options{Creds: credentials.NewStaticV4(ep.AccessKey, ep.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	key := prefix + "blobs/sha256/" + d.Encoded()
	bad := "damaged in the bucket"
	if _, err := c.PutObject(ctx, bucket, key, strings.NewReader(bad), int64(len(bad)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, loc, s3store.Options{LocalCacheSize: 1 << 20})
	var damaged atomic.Int32
	s.OnEvent(func(ev s3store.Event) {
		if ev.Kind == "damaged" && ev.Digest == d {
			damaged.Add(1)
		}
	})
	_, _ = cas.ReadAll(ctx, s, d, 1<<20) // served from the bucket as it is; copied behind
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
		if minio.ToErrorResponse(err).StatusCode == 404 && damaged.Load() > 0 {
			break // removed, and the event (sent after the removal) arrived
		}
		if time.Now().After(deadline) {
			t.Fatalf("damaged object 10 s after a replica copied it: stat %v, %d damaged events", err, damaged.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if damaged.Load() != 1 {
		t.Errorf("damaged events = %d, want 1", damaged.Load())
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, cas.ErrNotFound) {
		t.Errorf("Stat after removal = %v, want ErrNotFound (a miss that fills again)", err)
	}
	if _, err := s.Local().Stat(ctx, d); err == nil {
		t.Errorf("a local copy of the damaged bytes was kept")
	}
}
