package s3store_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/cas/casstest"
	"github.com/clowder-dev/clowder/cas/s3store"
	"github.com/clowder-dev/clowder/internal/testutil/s3test"
)

// These tests run against a real S3 engine (SeaweedFS, started by
// `make test-s3`: CLOWDER_S3_ENDPOINT, CLOWDER_S3_ACCESS_KEY,
// CLOWDER_S3_SECRET_KEY) or, without one, an in-process fake (s3test).
//
// Each test gets a fresh key prefix in one bucket, not a bucket of its
// own: an S3 engine on a small disk has room for few buckets (SeaweedFS
// gives each its own volumes).
func newStore(t *testing.T, loc string) *s3store.Store {
	t.Helper()
	return openStore(t, loc, s3store.Options{})
}

// openStore opens loc ("bucket/prefix/") with o's other options, on the
// test engine unless o.Endpoint names another (a proxy in front of it).
func openStore(t *testing.T, loc string, o s3store.Options) *s3store.Store {
	t.Helper()
	ep := s3test.Get(t)
	bucket, prefix, _ := strings.Cut(loc, "/")
	if o.Endpoint == "" {
		o.Endpoint = ep.URL
	}
	o.Bucket, o.Prefix, o.Region = bucket, prefix, "us-east-1"
	o.AccessKey, o.SecretKey = ep.AccessKey, ep.SecretKey
	if o.Root == "" {
		o.Root = t.TempDir()
	}
	s, err := s3store.New(context.Background(), o)
	if err != nil {
		t.Fatalf("s3store.New: %v", err)
	}
	return s
}

var n int64

// freshBucket returns a new location, "clowder-test/<unique>/".
func freshBucket() string {
	n++
	return fmt.Sprintf("%s/t%d-%d/", s3test.Bucket, time.Now().UnixNano()%1e9, n)
}

func TestS3Conformance(t *testing.T) {
	casstest.Run(t, func(t *testing.T) cas.Store { return newStore(t, freshBucket()) })
}

// Replicas sharing a bucket never lose each other's names, and a blob
// written by one is read by another.
func TestS3ReplicasShareNamesAndBlobs(t *testing.T) {
	bucket := freshBucket()
	var stores []*s3store.Store
	for range 3 {
		stores = append(stores, newStore(t, bucket))
	}
	ctx := context.Background()
	// Every name from its own goroutine: each replica batches what
	// arrives together, and the replicas race on index.json's ETag.
	const per = 40
	var wg sync.WaitGroup
	for i, s := range stores {
		for j := range per {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := "r" + strconv.Itoa(i) + "/n:" + strconv.Itoa(j)
				if err := s.Tag(ctx, name, ocispec.Descriptor{Digest: digest.FromString(name), Size: 1}); err != nil {
					t.Errorf("Tag(%s) = %v", name, err)
				}
			}()
		}
	}
	wg.Wait()
	// A replica's view of the names is at most indexFresh old; a fresh
	// one reads what the bucket holds.
	list, err := newStore(t, bucket).List(ctx)
	if err != nil || len(list) != 3*per {
		t.Errorf("names after 3 replicas x %d = %d (%v), want %d", per, len(list), err, 3*per)
	}
	data := []byte("shared by replicas")
	d := digest.FromBytes(data)
	if _, err := cas.Ingest(ctx, stores[1], ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytesReader(data)); err != nil {
		t.Fatal(err)
	}
	if got, err := cas.ReadAll(ctx, stores[2], d, 1<<20); err != nil || string(got) != string(data) {
		t.Errorf("replica 2 reads replica 1's blob = %q, %v", got, err)
	}
	// A second writer of the same blob is a no-op, not an error.
	if _, err := cas.Ingest(ctx, stores[0], ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytesReader(data)); err != nil {
		t.Errorf("second writer: %v", err)
	}
}

// local_cache_size: without it no local copy outlives its upload; with it
// the copies stay under the bound (least recently used go first) and a blob
// read from the bucket is copied locally for the next reader.
func TestS3LocalCache(t *testing.T) {
	ctx := context.Background()
	loc := freshBucket()
	open := func(limit int64) *s3store.Store { return openStore(t, loc, s3store.Options{LocalCacheSize: limit}) }
	blob := func(i int) ([]byte, digest.Digest) {
		b := make([]byte, 100<<10)
		for j := range b {
			b[j] = byte(i + j*7)
		}
		return b, digest.FromBytes(b)
	}
	localHas := func(s *s3store.Store, d digest.Digest) bool {
		_, err := s.Local().Stat(ctx, d)
		return err == nil
	}

	none := open(0)
	var ds []digest.Digest
	for i := range 4 {
		b, d := blob(i)
		ds = append(ds, d)
		if _, err := cas.Ingest(ctx, none, ocispec.Descriptor{Digest: d, Size: int64(len(b))}, bytesReader(b)); err != nil {
			t.Fatal(err)
		}
		if localHas(none, d) {
			t.Errorf("local_cache_size 0: blob %d kept locally after its upload", i)
		}
	}
	if got, err := cas.ReadAll(ctx, none, ds[0], 1<<20); err != nil || digest.FromBytes(got) != ds[0] {
		t.Errorf("read from the bucket: %v", err)
	}

	// 250 KiB holds two 100 KiB copies.
	cached := open(250 << 10)
	for _, d := range ds[:3] {
		if got, err := cas.ReadAll(ctx, cached, d, 1<<20); err != nil || digest.FromBytes(got) != d {
			t.Fatalf("read %s: %v", d, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !localHas(cached, d) {
			if time.Now().After(deadline) {
				t.Fatalf("no local copy of %s 10 s after reading it from the bucket", d)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The copy lands (its file) a moment before it is counted and the
	// bound enforced.
	var held int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		held = 0
		for _, d := range ds {
			if localHas(cached, d) {
				held++
			}
		}
		if (held == 2 && !localHas(cached, ds[0])) || time.Now().After(deadline) {
			break
		}
	}
	if held != 2 || localHas(cached, ds[0]) {
		t.Errorf("local copies = %d (first read still held: %v), want the 2 most recently used under a 250 KiB bound", held, localHas(cached, ds[0]))
	}
}

// With the bucket unreachable, a replica keeps resolving the names it last
// read (its local copies keep answering through an outage) instead of
// failing every pull, warm ones included; and once the bucket failed to
// answer it is not asked again for a while, so requests do not each wait
// out the S3 client's retries.
func TestS3NamesThroughBucketOutage(t *testing.T) {
	front := s3test.NewFront(t, s3test.Get(t))
	s := openStore(t, freshBucket(), s3store.Options{Endpoint: front.URL})
	ctx := context.Background()
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("outage"), Size: 6}
	if _, err := cas.Ingest(ctx, s, desc, strings.NewReader("outage")); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(ctx, "outage:v1", desc); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "outage:v1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // past the index's freshness
	front.Down.Store(true)
	if got, err := s.Resolve(ctx, "outage:v1"); err != nil || got.Digest != desc.Digest {
		t.Errorf("Resolve with the bucket down = %v, %v; want the name last read (%s)", got.Digest, err, desc.Digest)
	}
	first := front.Asked.Load()
	if first == 0 {
		t.Fatalf("the bucket was not asked at all past the index's freshness")
	}
	// Past the index's freshness (500 ms) but within the hold (5 s).
	for range 12 {
		time.Sleep(100 * time.Millisecond)
		if got, err := s.Resolve(ctx, "outage:v1"); err != nil || got.Digest != desc.Digest {
			t.Fatalf("Resolve with the bucket down = %v, %v", got.Digest, err)
		}
	}
	if n := front.Asked.Load(); n != first {
		t.Errorf("resolves over 1.2 s after the bucket failed asked it %d more times, want none (outage hold)", n-first)
	}
}

// A blob whose upload the bucket refuses still commits (its fill and
// clients succeed): the verified copy stays local and is uploaded once the
// bucket takes it again.
func TestS3DeferredUpload(t *testing.T) {
	target, _ := url.Parse(s3test.Get(t).URL)
	var refuse atomic.Bool
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/") {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>refused by the test</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	loc := freshBucket()
	var events []string
	var mu sync.Mutex
	s := openStore(t, loc, s3store.Options{Endpoint: front.URL, UploadRetry: 50 * time.Millisecond})
	s.OnEvent(func(ev s3store.Event) { mu.Lock(); events = append(events, ev.Kind); mu.Unlock() })
	direct := newStore(t, loc)

	ctx := context.Background()
	data := []byte("kept while the bucket refuses")
	d := digest.FromBytes(data)
	refuse.Store(true)
	if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytesReader(data)); err != nil {
		t.Fatalf("ingest with the bucket refusing uploads: %v", err)
	}
	if s.Unuploaded() != 1 {
		t.Errorf("Unuploaded = %d, want 1", s.Unuploaded())
	}
	if got, err := cas.ReadAll(ctx, s, d, 1<<20); err != nil || string(got) != string(data) {
		t.Errorf("read back from the replica: %q, %v", got, err)
	}
	if _, err := direct.Stat(ctx, d); err == nil {
		t.Fatalf("blob in the bucket although its upload was refused")
	}
	// A restart with the list of blobs still to upload: the new process
	// (here on the bucket directly) offers them again.
	restarted := openStore(t, loc, s3store.Options{Root: s.Local().Root(), UploadRetry: 50 * time.Millisecond})
	for deadline := time.Now().Add(10 * time.Second); restarted.Unuploaded() > 0 || !cas.Exists(ctx, direct, d); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a restarted replica did not upload the blob its previous run could not (pending %d)", restarted.Unuploaded())
		}
	}
	refuse.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for s.Unuploaded() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("deferred upload not done 10 s after the bucket came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := cas.ReadAll(ctx, direct, d, 1<<20); err != nil || string(got) != string(data) {
		t.Errorf("another replica reads the deferred blob: %q, %v", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(events, ",") != "upload-deferred,uploaded" && strings.Join(events, ",") != "upload-deferred" {
		t.Errorf("events %v, want upload-deferred then uploaded", events)
	}
}

// A local copy handed out by clowder path or checkout (a link points at
// it) is never evicted by local_cache_size, nor dropped after upload with
// no cache, by this process or a later one on the same root.
func TestS3HandedOutCopyStays(t *testing.T) {
	ctx := context.Background()
	loc := freshBucket()
	root := t.TempDir()
	s := openStore(t, loc, s3store.Options{Root: root, LocalCacheSize: 250 << 10})
	blob := func(i int) ([]byte, digest.Digest) {
		b := make([]byte, 100<<10)
		for j := range b {
			b[j] = byte(i*13 + j*7)
		}
		return b, digest.FromBytes(b)
	}
	first, d0 := blob(0)
	if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d0, Size: int64(len(first))}, bytesReader(first)); err != nil {
		t.Fatal(err)
	}
	p, err := s.BlobPath(d0)
	if err != nil {
		t.Fatal(err)
	}
	// Five more copies through a 250 KiB bound: without the mark the
	// least recently used (d0) goes first.
	for i := 1; i <= 5; i++ {
		b, d := blob(i)
		if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: int64(len(b))}, bytesReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("handed-out copy evicted by local_cache_size: %v", err)
	}
	// A later run on the same root, a tiny bound, and one without a cache
	// that ingests the same blob again.
	openStore(t, loc, s3store.Options{Root: root, LocalCacheSize: 1})
	none := openStore(t, loc, s3store.Options{Root: root})
	if _, err := cas.Ingest(ctx, none, ocispec.Descriptor{Digest: d0, Size: int64(len(first))}, bytesReader(first)); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || digest.FromBytes(got) != d0 {
		t.Fatalf("handed-out copy after a restart and a re-ingest: %v", err)
	}
	// Removing the blob from the store removes the copy and its mark.
	if err := none.Delete(ctx, d0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("copy still there after Delete: %v", err)
	}
}
