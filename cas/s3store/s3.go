// Package s3store is the second cas.Store backend: an OCI image layout
// kept in an S3-compatible bucket (AWS S3, Ceph RGW, MinIO, SeaweedFS) and
// shared by several Clowder replicas.
//
// Keys mirror the layout, so a copy of the bucket is a valid layout:
//
//	<prefix>oci-layout
//	<prefix>index.json              names; updated with If-Match on its ETag
//	<prefix>blobs/<alg>/<hex>       uploaded once verified, If-None-Match: *
//
// Bytes still go through cas's one verified ingest path: a Writer is a
// local Layout's (in root, the replica's working area), and Commit uploads
// the verified, committed file; a second writer of the same blob is a
// no-op, and an upload the bucket refuses is kept locally and retried.
// With Options.LocalCacheSize the local layout keeps a bounded set of
// copies (cache.go), so warm serving runs at local-disk speed; without it
// hits stream from the bucket. Replicas share fills through lease objects
// (fleet.go), so the fleet fetches each blob from upstream once.
package s3store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/clowder-dev/clowder/cas"
)

// Options locate the bucket.
type Options struct {
	Endpoint  string // http(s)://host:port
	Bucket    string
	Region    string
	Prefix    string // key prefix inside the bucket
	AccessKey string
	SecretKey string
	// Root is the local working area (ingest files, the local copies).
	Root string
	// LocalCacheSize bounds the bytes of local blob copies kept under Root
	// (least recently used go first); 0 keeps none, so every read streams
	// from the bucket.
	LocalCacheSize int64
	// Advertise is how other replicas reach this one (http://host:port);
	// with it, fills are coordinated through leases in the bucket.
	Advertise string
	// LeaseTTL is how long a fill lease lives without renewal (default 15s).
	LeaseTTL time.Duration
	// FleetKey signs requests between replicas (see FleetToken).
	FleetKey []byte
	// NoCreate makes New fail when the bucket does not exist, instead of
	// creating it (commands that only read: a typo must not make a bucket).
	NoCreate bool
	// UploadRetry is how often blobs whose upload failed (the bucket was
	// down) are offered again (default 30s).
	UploadRetry time.Duration
	// PeerClient fetches fills from other replicas (default: a plain client).
	PeerClient *http.Client
}

// Store is a cas.Store on S3.
type Store struct {
	c      *minio.Client
	bucket string
	prefix string
	local  *cas.Layout
	cache  *localCache
	fleet  *fleet

	onEvent func(Event)

	// unuploaded are blobs committed here whose upload failed: kept
	// locally (outside the local cache's bound) and offered again.
	upMu       sync.Mutex
	unuploaded map[digest.Digest]int64
	retrying   bool
	retryEvery time.Duration

	// known remembers blobs seen in the bucket (blobs are immutable; a
	// Delete here forgets them), so walks of names cost no round trips.
	known sync.Map

	// Pending index.json updates (group commit, see update).
	umu     sync.Mutex
	pending []*pendingUpdate
	writing bool

	mu      sync.Mutex
	idx     ocispec.Index
	idxETag string
	idxAt   time.Time
	idxSF   singleflight.Group // one revalidation of index.json at a time
	// downUntil (unix ns) is set when the bucket failed to answer: until
	// then the fill path does not ask it (no lease, no stat, no upload
	// attempt) but falls back at once, instead of every request waiting out
	// the S3 client's retries.
	downUntil atomic.Int64
	upKick    chan struct{} // the bucket answered again: retry deferred uploads now
}

var (
	_ cas.Store        = (*Store)(nil)
	_ cas.Collectable  = (*Store)(nil)
	_ cas.Coordinator  = (*Store)(nil)
	_ cas.StoredOpener = (*Store)(nil)
)

// indexFresh is how long a read of index.json is reused before its ETag is
// checked again.
const indexFresh = 500 * time.Millisecond

// outageHold is how long the names last read are used without asking the
// bucket again once it failed to answer.
const outageHold = 5 * time.Second

// s3Retries bounds the S3 client's attempts per request.
const s3Retries = 4

// New connects, creating the bucket, oci-layout and index.json if missing.
func New(ctx context.Context, o Options) (*Store, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("s3 endpoint %q: want http(s)://host[:port]", o.Endpoint)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure: u.Scheme == "https",
		Region: o.Region,
		// A few quick retries ride out a blip (~2.6 s of backoff); past
		// them the store's own fallbacks take over (deferred uploads,
		// names last read, fetching alone) instead of every request
		// waiting out the client's default ten.
		MaxRetries: s3Retries,
	})
	if err != nil {
		return nil, err
	}
	local, err := cas.OpenLayout(o.Root)
	if err != nil {
		return nil, err
	}
	s := &Store{c: c, bucket: o.Bucket, prefix: o.Prefix, local: local, cache: newLocalCache(local, o.LocalCacheSize),
		unuploaded: map[digest.Digest]int64{}, retryEvery: o.UploadRetry, upKick: make(chan struct{}, 1)}
	if s.retryEvery <= 0 {
		s.retryEvery = 30 * time.Second
	}
	if o.Advertise != "" {
		s.fleet = newFleet(s, o)
	}
	if ok, err := c.BucketExists(ctx, o.Bucket); err != nil {
		return nil, fmt.Errorf("s3 bucket %s: %w%s", o.Bucket, err, credentialsHint(err))
	} else if !ok && o.NoCreate {
		return nil, fmt.Errorf("s3 bucket %s does not exist (clowder serve, pull and import create it)", o.Bucket)
	} else if !ok {
		if err := c.MakeBucket(ctx, o.Bucket, minio.MakeBucketOptions{Region: o.Region}); err != nil {
			if resp := minio.ToErrorResponse(err); resp.Code != "BucketAlreadyOwnedByYou" && resp.Code != "BucketAlreadyExists" {
				return nil, fmt.Errorf("s3 bucket %s: %w", o.Bucket, err)
			}
		}
	}
	lb, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := s.putIfAbsent(ctx, ocispec.ImageLayoutFile, lb); err != nil {
		return nil, err
	}
	ib, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}})
	if err := s.putIfAbsent(ctx, "index.json", ib); err != nil {
		return nil, err
	}
	if !o.NoCreate {
		s.loadDeferred()
	}
	return s, nil
}

// deferredFile lists (digest size per line) the committed blobs whose
// upload failed, so a restart offers them again.
const deferredFile = ".clowder/unuploaded"

// loadDeferred offers again the blobs a previous run could not upload.
func (s *Store) loadDeferred() {
	b, err := os.ReadFile(filepath.Join(s.local.Root(), deferredFile))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		var d digest.Digest
		var n int64
		if _, err := fmt.Sscan(line, &d, &n); err != nil || cas.ValidateDigest(d) != nil {
			continue
		}
		s.deferUpload(ocispec.Descriptor{Digest: d, Size: n}, errors.New("not uploaded by the previous run"))
	}
}

// saveDeferredLocked writes the deferred list (upMu held).
func (s *Store) saveDeferredLocked() {
	var b strings.Builder
	for d, n := range s.unuploaded {
		fmt.Fprintf(&b, "%s %d\n", d, n)
	}
	p := filepath.Join(s.local.Root(), deferredFile)
	tmp := p + ".tmp"
	if os.WriteFile(tmp, []byte(b.String()), 0o644) == nil {
		_ = os.Rename(tmp, p)
	}
}

// LocalCacheBytes returns the bytes of local copies the local cache holds.
func (s *Store) LocalCacheBytes() int64 { return s.cache.Bytes() }

// Local returns the replica's local layout (working area and read copy).
func (s *Store) Local() *cas.Layout { return s.local }

func (s *Store) key(name string) string { return s.prefix + name }

func blobKey(d digest.Digest) string { return "blobs/" + d.Algorithm().String() + "/" + d.Encoded() }

func isPrecondition(err error) bool {
	var r minio.ErrorResponse
	if !errors.As(err, &r) {
		r = minio.ToErrorResponse(err)
	}
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed" ||
		strings.Contains(err.Error(), "pre-conditions you specified did not hold")
}

// credentialsHint points at the config keys when S3 refused the
// credentials.
func credentialsHint(err error) string {
	switch minio.ToErrorResponse(err).Code {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return " (check storage.s3.access_key and secret_key)"
	}
	return ""
}

func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey"
}

// putIfAbsent writes name unless it exists (If-None-Match: *).
func (s *Store) putIfAbsent(ctx context.Context, name string, b []byte) error {
	opts := minio.PutObjectOptions{ContentType: "application/json"}
	opts.SetMatchETagExcept("*")
	_, err := s.c.PutObject(ctx, s.bucket, s.key(name), bytes.NewReader(b), int64(len(b)), opts)
	if err != nil && !isPrecondition(err) {
		return fmt.Errorf("s3 %s: %w", name, err)
	}
	return nil
}

// Stat implements cas.BlobStore.
func (s *Store) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	if n, err := s.local.Stat(ctx, d); err == nil {
		return n, nil
	} else if !errors.Is(err, cas.ErrNotFound) {
		return 0, err
	}
	if n, ok := s.known.Load(d); ok {
		return n.(int64), nil
	}
	return s.statBucket(ctx, d)
}

// errBucketDown is returned without asking while the bucket is held down.
var errBucketDown = errors.New("the bucket did not answer a moment ago (asked again after a pause)")

// down reports whether the bucket failed to answer within outageHold.
func (s *Store) down() bool { return time.Now().UnixNano() < s.downUntil.Load() }

// unavailable records err when it says the bucket cannot be reached (no
// answer, or a 5xx after the client's retries) and returns it.
func (s *Store) unavailable(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err // the caller's own deadline says nothing about the bucket
	}
	if code := minio.ToErrorResponse(err).StatusCode; code == 0 || code >= 500 {
		s.downUntil.Store(time.Now().Add(outageHold).UnixNano())
	}
	return err
}

// answered records that the bucket answered: a hold on it ends, and blobs
// whose upload was deferred are offered again at once.
func (s *Store) answered() {
	if s.downUntil.Swap(0) != 0 {
		select {
		case s.upKick <- struct{}{}:
		default:
		}
	}
}

// statBucket asks the bucket for a blob's size.
func (s *Store) statBucket(ctx context.Context, d digest.Digest) (int64, error) {
	if s.down() {
		return 0, fmt.Errorf("blob %s: %w", d, errBucketDown)
	}
	info, err := s.c.StatObject(ctx, s.bucket, s.key(blobKey(d)), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			s.known.Delete(d)
			return 0, fmt.Errorf("blob %s: %w", d, cas.ErrNotFound)
		}
		return 0, fmt.Errorf("blob %s: %w", d, s.unavailable(err))
	}
	s.answered()
	s.known.Store(d, info.Size)
	return info.Size, nil
}

// Open implements cas.BlobStore: the local copy when held, else the bucket
// (and, with a local cache, a local copy is made for the next reader).
func (s *Store) Open(ctx context.Context, d digest.Digest) (cas.Blob, error) {
	if err := cas.ValidateDigest(d); err != nil {
		return nil, err
	}
	b, err := s.local.Open(ctx, d)
	if err == nil {
		s.cache.touch(d)
		return b, nil
	} else if !errors.Is(err, cas.ErrNotFound) {
		return nil, err
	}
	// Asked every time (another replica's GC may have removed it; then
	// the caller fills it again instead of failing mid-answer).
	size, err := s.statBucket(ctx, d)
	if err != nil {
		return nil, err
	}
	s.cache.warm(s, d, size)
	return &s3Blob{s: s, d: d, size: size}, nil
}

// OpenStored streams a blob's object in the bucket, past any local copy
// (cas.StoredOpener: clowder verify checks what every replica reads).
func (s *Store) OpenStored(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	if err := cas.ValidateDigest(d); err != nil {
		return nil, err
	}
	return s.getRange(ctx, d, 0, -1)
}

// s3Blob reads a blob in the bucket. Sequential reads share one streaming
// GET; OpenRange gives a caller one ranged GET for a whole span.
type s3Blob struct {
	s    *Store
	d    digest.Digest
	size int64

	mu   sync.Mutex
	pos  int64
	body io.ReadCloser
	at   int64 // offset body is at
}

func (b *s3Blob) Size() int64 { return b.size }

// OpenRange streams [off, off+n) (n < 0: to the end) with one GET.
func (b *s3Blob) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return b.s.getRange(ctx, b.d, off, n)
}

func (b *s3Blob) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.readAt(p, b.pos)
	b.pos += int64(n)
	return n, err
}

// ReadAt reuses the open stream when off is where it stands, else opens a
// new one from off (to the end, so the next sequential ReadAt reuses it).
func (b *s3Blob) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.readAt(p, off)
}

func (b *s3Blob) readAt(p []byte, off int64) (int, error) {
	if off >= b.size {
		return 0, io.EOF
	}
	if b.body == nil || b.at != off {
		if b.body != nil {
			b.body.Close()
		}
		body, err := b.s.getRange(context.Background(), b.d, off, -1)
		if err != nil {
			b.body = nil
			return 0, err
		}
		b.body, b.at = body, off
	}
	want := min(int64(len(p)), b.size-off)
	n, err := io.ReadFull(b.body, p[:want])
	b.at += int64(n)
	if err != nil {
		b.body.Close()
		b.body = nil
		return n, fmt.Errorf("blob %s at %d: %w", b.d, off+int64(n), err)
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

func (b *s3Blob) Seek(offset int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.pos
	case io.SeekEnd:
		offset += b.size
	default:
		return 0, errors.New("s3 blob: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("s3 blob: negative offset")
	}
	b.pos = offset
	return offset, nil
}

func (b *s3Blob) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
	return nil
}

// getRange opens one GET of [off, off+n) of a blob in the bucket.
func (s *Store) getRange(ctx context.Context, d digest.Digest, off, n int64) (io.ReadCloser, error) {
	opts := minio.GetObjectOptions{}
	if off > 0 || n >= 0 {
		end := int64(0)
		if n >= 0 {
			end = off + n - 1
		}
		if n == 0 {
			return io.NopCloser(strings.NewReader("")), nil
		}
		if err := opts.SetRange(off, end); err != nil {
			return nil, err
		}
	}
	body, _, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, s.key(blobKey(d)), opts)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("blob %s: %w", d, cas.ErrNotFound)
		}
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	return body, nil
}

// Writer implements cas.BlobStore: the local verified ingest path, then an
// upload of the committed file.
func (s *Store) Writer(ctx context.Context, expected ocispec.Descriptor) (cas.Writer, error) {
	w, err := s.local.Writer(ctx, expected)
	if err != nil {
		return nil, err
	}
	return &writer{Writer: w, s: s}, nil
}

type writer struct {
	cas.Writer
	s *Store
}

// Verify passes the local writer's early verification through.
func (w *writer) Verify() error {
	if v, ok := w.Writer.(interface{ Verify() error }); ok {
		return v.Verify()
	}
	return nil
}

func (w *writer) Commit(ctx context.Context) (ocispec.Descriptor, error) {
	// Read what is uploaded through our own descriptor of the ingest file:
	// it stays valid through the rename into blobs/ and whatever another
	// writer of the same blob or the local cache does to that path.
	r, err := w.Writer.OpenReader()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer r.Close()
	desc, err := w.Writer.Commit(ctx)
	if err != nil {
		return desc, err
	}
	if err := w.s.upload(ctx, desc, io.NewSectionReader(r, 0, desc.Size)); err != nil {
		// The bucket is down or refused: the verified blob stays in this
		// replica's layout and is offered again until the bucket takes it,
		// so the fill (and its clients) still succeed.
		w.s.deferUpload(desc, err)
		return desc, nil
	}
	w.s.cache.added(desc.Digest, desc.Size)
	return desc, nil
}

// Event is something a Store did that operators want to see: fleet
// coordination ("lease", "follow", "takeover", "alone") and uploads the
// bucket refused ("upload-deferred") or took later ("uploaded").
type Event struct {
	Kind   string
	Digest digest.Digest
	Peer   string // the other replica (fleet events)
	Err    error  // the cause ("alone", "upload-deferred", "damaged")
}

// OnEvent sets the hook told about Events. Call it before serving.
func (s *Store) OnEvent(fn func(Event)) { s.onEvent = fn }

func (s *Store) event(ev Event) {
	if s.onEvent != nil {
		s.onEvent(ev)
	}
}

// deferUpload records a committed blob whose upload failed and starts the
// retry loop.
func (s *Store) deferUpload(desc ocispec.Descriptor, err error) {
	s.event(Event{Kind: "upload-deferred", Digest: desc.Digest, Err: err})
	s.upMu.Lock()
	defer s.upMu.Unlock()
	s.unuploaded[desc.Digest] = desc.Size
	s.saveDeferredLocked()
	if !s.retrying {
		s.retrying = true
		go s.retryUploads()
	}
}

// Unuploaded returns how many committed blobs wait for the bucket.
func (s *Store) Unuploaded() int {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	return len(s.unuploaded)
}

// retryUploads offers the deferred blobs to the bucket every retryEvery
// until none is left.
func (s *Store) retryUploads() {
	for {
		select {
		case <-time.After(s.retryEvery):
		case <-s.upKick:
		}
		s.upMu.Lock()
		todo := make(map[digest.Digest]int64, len(s.unuploaded))
		for d, n := range s.unuploaded {
			todo[d] = n
		}
		s.upMu.Unlock()
		for d, n := range todo {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			err := s.uploadLocal(ctx, ocispec.Descriptor{Digest: d, Size: n})
			cancel()
			if err != nil && !errors.Is(err, cas.ErrNotFound) {
				continue // still down: next round
			}
			s.upMu.Lock()
			delete(s.unuploaded, d)
			s.saveDeferredLocked()
			s.upMu.Unlock()
			if err == nil {
				s.event(Event{Kind: "uploaded", Digest: d})
				s.cache.added(d, n)
			}
		}
		s.upMu.Lock()
		if len(s.unuploaded) == 0 {
			s.retrying = false
			s.upMu.Unlock()
			return
		}
		s.upMu.Unlock()
	}
}

// uploadLocal uploads the local copy of a blob (ErrNotFound when the copy
// is gone, e.g. collected meanwhile).
func (s *Store) uploadLocal(ctx context.Context, desc ocispec.Descriptor) error {
	f, err := s.local.Open(ctx, desc.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.upload(ctx, desc, f)
}

// upload puts a locally committed blob into the bucket once (a second
// writer's If-None-Match fails: the blob is there already).
func (s *Store) upload(ctx context.Context, desc ocispec.Descriptor, body io.Reader) error {
	// Already there (another replica): nothing to do. minio-go's multipart
	// path drops If-None-Match, so look first; the conditional header still
	// guards the single-PUT race. A replica that followed another's fill
	// waits for the owner's upload instead of sending the bytes again.
	if s.fleet != nil && s.fleet.awaitOwnerUpload(ctx, desc.Digest) {
		return nil
	}
	if _, err := s.statBucket(ctx, desc.Digest); err == nil {
		return nil
	} else if errors.Is(err, errBucketDown) {
		return fmt.Errorf("blob %s: upload: %w", desc.Digest, err)
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: 64 << 20}
	opts.SetMatchETagExcept("*")
	if _, err := s.c.PutObject(ctx, s.bucket, s.key(blobKey(desc.Digest)), body, desc.Size, opts); err != nil && !isPrecondition(err) {
		return fmt.Errorf("blob %s: upload: %w", desc.Digest, s.unavailable(err))
	}
	s.known.Store(desc.Digest, desc.Size)
	return nil
}

// Delete implements cas.BlobStore.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	if err := s.local.Delete(ctx, d); err != nil {
		return err
	}
	s.cache.removed(d)
	s.cache.unkeep(d)
	s.known.Delete(d)
	if err := s.c.RemoveObject(ctx, s.bucket, s.key(blobKey(d)), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	return nil
}

// --- names: index.json with optimistic concurrency ---

func (s *Store) readIndex(ctx context.Context) (ocispec.Index, string, error) {
	// One GET that returns the body and its ETag together (minio's lazy
	// Object would re-request with If-Match and fail when another replica
	// updates index.json meanwhile).
	body, info, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, s.key("index.json"), minio.GetObjectOptions{})
	if err != nil {
		return ocispec.Index{}, "", fmt.Errorf("index.json: %w", err)
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, 256<<20))
	if err != nil {
		return ocispec.Index{}, "", fmt.Errorf("index.json: %w", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return ocispec.Index{}, "", fmt.Errorf("index.json: %w", err)
	}
	return idx, info.ETag, nil
}

// index returns the current names (reused for indexFresh, then revalidated
// by ETag, by one request at a time: the others wait for its answer).
func (s *Store) index(ctx context.Context) (ocispec.Index, error) {
	s.mu.Lock()
	// Fresh, or the bucket failed to answer a moment ago: the names last
	// read serve, so local copies keep answering through an outage
	// without each request waiting out the S3 client's retries.
	if s.idxETag != "" && (time.Since(s.idxAt) < indexFresh || s.down()) {
		idx := s.idx
		s.mu.Unlock()
		return idx, nil
	}
	s.mu.Unlock()
	v, err, _ := s.idxSF.Do("index.json", func() (any, error) {
		// Shared by every waiter: not cut short by the first one leaving.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		return s.revalidateIndex(ctx)
	})
	if err != nil {
		return ocispec.Index{}, err
	}
	return v.(ocispec.Index), nil
}

func (s *Store) revalidateIndex(ctx context.Context) (ocispec.Index, error) {
	s.mu.Lock()
	etag := s.idxETag
	s.mu.Unlock()
	if etag != "" {
		info, err := s.c.StatObject(ctx, s.bucket, s.key("index.json"), minio.StatObjectOptions{})
		if err = s.unavailable(err); err == nil {
			s.answered()
		}
		// Unchanged; or the bucket cannot be reached (it is then held
		// down, see index): the names last read serve.
		if (err == nil && info.ETag == etag) || (err != nil && !isNotFound(err) && ctx.Err() == nil) {
			s.mu.Lock()
			s.idxAt = time.Now()
			idx := s.idx
			s.mu.Unlock()
			return idx, nil
		}
	}
	idx, etag, err := s.readIndex(ctx)
	if err != nil {
		return ocispec.Index{}, err
	}
	s.mu.Lock()
	s.idx, s.idxETag, s.idxAt = idx, etag, time.Now()
	s.mu.Unlock()
	return idx, nil
}

// Update applies fn to index.json with If-Match on its ETag, retrying on 412
// so concurrent replicas never lose each other's names (cas.Updater).
func (s *Store) Update(fn func(idx *ocispec.Index) (bool, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return s.update(ctx, fn)
}

// update applies fn to index.json with If-Match on its ETag, retrying on
// 412 so concurrent replicas never lose each other's names. Updates from
// this replica that arrive while one is being written are applied together
// in the next write (group commit), so the bucket sees at most one writer
// per replica and retries stay few however many pulls name things at once.
func (s *Store) update(ctx context.Context, fn func(idx *ocispec.Index) (bool, error)) error {
	u := &pendingUpdate{fn: fn, done: make(chan error, 1)}
	s.umu.Lock()
	s.pending = append(s.pending, u)
	lead := !s.writing
	s.writing = true
	s.umu.Unlock()
	if lead {
		s.writeBatches()
	}
	select {
	case err := <-u.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type pendingUpdate struct {
	fn   func(idx *ocispec.Index) (bool, error)
	done chan error
}

// writeBatches writes the pending updates, batch after batch, until none is
// left.
func (s *Store) writeBatches() {
	for {
		s.umu.Lock()
		batch := s.pending
		s.pending = nil
		if len(batch) == 0 {
			s.writing = false
			s.umu.Unlock()
			return
		}
		s.umu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		errs := s.writeBatch(ctx, batch)
		cancel()
		for i, u := range batch {
			u.done <- errs[i]
		}
	}
}

// writeBatch applies every update of batch to one read of index.json and
// writes it with If-Match, again from a fresh read after a 412. An update
// whose fn fails is left out and gets its error.
func (s *Store) writeBatch(ctx context.Context, batch []*pendingUpdate) []error {
	errs := make([]error, len(batch))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for attempt := 0; attempt < 30; attempt++ {
		idx, etag, err := s.readIndex(ctx)
		if err != nil {
			return fail(err)
		}
		changed := false
		for i, u := range batch {
			saved := append([]ocispec.Descriptor(nil), idx.Manifests...)
			c, err := u.fn(&idx)
			errs[i] = err
			if err != nil {
				idx.Manifests = saved
				continue
			}
			changed = changed || c
		}
		if !changed {
			return errs
		}
		if idx.Manifests == nil {
			idx.Manifests = []ocispec.Descriptor{}
		}
		b, _ := json.MarshalIndent(idx, "", "  ")
		opts := minio.PutObjectOptions{ContentType: "application/json"}
		opts.SetMatchETag(etag)
		info, err := s.c.PutObject(ctx, s.bucket, s.key("index.json"), bytes.NewReader(b), int64(len(b)), opts)
		if err == nil {
			s.mu.Lock()
			s.idx, s.idxETag, s.idxAt = idx, info.ETag, time.Now()
			s.mu.Unlock()
			s.answered()
			return errs
		}
		if !isPrecondition(err) {
			return fail(fmt.Errorf("index.json: %w", s.unavailable(err)))
		}
		// Another replica wrote first: back off a random while, so
		// replicas that collided do not collide again in step.
		time.Sleep(time.Duration(rand.Int64N(int64(min(attempt+1, 10)) * int64(20*time.Millisecond))))
	}
	return fail(errors.New("index.json: too many concurrent updates"))
}

// Resolve implements cas.NameStore.
func (s *Store) Resolve(ctx context.Context, name string) (ocispec.Descriptor, error) {
	idx, err := s.index(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, d := range idx.Manifests {
		if d.Annotations[cas.AnnotationRefName] == name {
			return d, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("name %s: %w", name, cas.ErrNotFound)
}

// List implements cas.NameStore.
func (s *Store) List(ctx context.Context) ([]ocispec.Descriptor, error) {
	idx, err := s.index(ctx)
	if err != nil {
		return nil, err
	}
	out := append([]ocispec.Descriptor(nil), idx.Manifests...)
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].Annotations[cas.AnnotationRefName] < out[j].Annotations[cas.AnnotationRefName]
	})
	return out, nil
}

// Tag implements cas.NameStore.
func (s *Store) Tag(ctx context.Context, name string, desc ocispec.Descriptor) error {
	if name == "" {
		return fmt.Errorf("name %q: %w", name, cas.ErrInvalidName)
	}
	if err := cas.ValidateDigest(desc.Digest); err != nil {
		return err
	}
	ann := map[string]string{}
	for k, v := range desc.Annotations {
		ann[k] = v
	}
	ann[cas.AnnotationRefName] = name
	ann[cas.AnnotationContainerdRef] = name
	desc.Annotations = ann
	return s.update(ctx, func(idx *ocispec.Index) (bool, error) {
		for i, d := range idx.Manifests {
			if d.Annotations[cas.AnnotationRefName] == name {
				idx.Manifests[i] = desc
				return true, nil
			}
		}
		idx.Manifests = append(idx.Manifests, desc)
		return true, nil
	})
}

// Untag implements cas.NameStore.
func (s *Store) Untag(ctx context.Context, name string) error {
	found := false
	err := s.update(ctx, func(idx *ocispec.Index) (bool, error) {
		found = false // fn runs again after a conflict
		out := idx.Manifests[:0]
		for _, d := range idx.Manifests {
			if d.Annotations[cas.AnnotationRefName] == name {
				found = true
				continue
			}
			out = append(out, d)
		}
		idx.Manifests = out
		return found, nil
	})
	if err == nil && !found {
		return fmt.Errorf("name %s: %w", name, cas.ErrNotFound)
	}
	return err
}

// Blobs implements cas.Collectable: every blob in the bucket.
func (s *Store) Blobs(ctx context.Context, fn func(cas.BlobInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for obj := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.key("blobs/"), Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("s3 list blobs: %w", obj.Err)
		}
		rel := strings.TrimPrefix(obj.Key, s.key("blobs/"))
		alg, enc, ok := strings.Cut(rel, "/")
		if !ok {
			continue
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
		if cas.ValidateDigest(d) != nil {
			continue
		}
		if err := fn(cas.BlobInfo{Digest: d, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	return nil
}

// BlobPath returns the path of a local copy of a blob, downloading it from
// the bucket (verified) when the replica holds none (clowder path, checkout).
func (s *Store) BlobPath(d digest.Digest) (string, error) {
	p, err := s.local.BlobPath(d)
	if err != nil {
		return "", err
	}
	// Marked before the copy exists, so no process's cache evicts it
	// between the download and the mark: the copy stays until the blob
	// leaves the store (gc, rm), since a checkout links to it.
	if err := s.cache.keep(d); err != nil {
		return "", err
	}
	ctx := context.Background()
	if _, err := s.local.Stat(ctx, d); err == nil {
		return p, nil
	}
	if _, err := s.download(ctx, d, -1); err != nil {
		s.cache.unkeep(d)
		return "", err
	}
	return p, nil
}

// download copies a blob from the bucket into the local layout through the
// verified ingest path. An object whose bytes do not hash to its digest (or
// are not the size the caller knows) was damaged in the bucket: it is
// removed there, so the next request for it fills it again.
func (s *Store) download(ctx context.Context, d digest.Digest, size int64) (ocispec.Descriptor, error) {
	body, err := s.getRange(ctx, d, 0, -1)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer body.Close()
	desc, err := cas.Ingest(ctx, s.local, ocispec.Descriptor{Digest: d, Size: size}, body)
	if errors.Is(err, cas.ErrDigestMismatch) || errors.Is(err, cas.ErrSizeMismatch) {
		s.known.Delete(d)
		if rerr := s.c.RemoveObject(ctx, s.bucket, s.key(blobKey(d)), minio.RemoveObjectOptions{}); rerr != nil && !isNotFound(rerr) {
			err = fmt.Errorf("%w (removing it from the bucket: %v)", err, rerr)
		}
		s.event(Event{Kind: "damaged", Digest: d, Err: err})
	}
	return desc, err
}
