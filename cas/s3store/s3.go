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
// no-op. The local layout keeps what this replica wrote or read, so warm
// serving runs at local-disk speed.
package s3store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

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
	// Root is the local working area (ingest files, the local copy).
	Root string
}

// Store is a cas.Store on S3.
type Store struct {
	c      *minio.Client
	bucket string
	prefix string
	local  *cas.Layout

	mu      sync.Mutex
	idx     ocispec.Index
	idxETag string
	idxAt   time.Time
}

var _ cas.Store = (*Store)(nil)

// indexFresh is how long a read of index.json is reused before its ETag is
// checked again.
const indexFresh = 500 * time.Millisecond

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
	})
	if err != nil {
		return nil, err
	}
	local, err := cas.OpenLayout(o.Root)
	if err != nil {
		return nil, err
	}
	s := &Store{c: c, bucket: o.Bucket, prefix: o.Prefix, local: local}
	if ok, err := c.BucketExists(ctx, o.Bucket); err != nil {
		return nil, fmt.Errorf("s3 bucket %s: %w", o.Bucket, err)
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
	return s, nil
}

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
	info, err := s.c.StatObject(ctx, s.bucket, s.key(blobKey(d)), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return 0, fmt.Errorf("blob %s: %w", d, cas.ErrNotFound)
		}
		return 0, fmt.Errorf("blob %s: %w", d, err)
	}
	return info.Size, nil
}

// Open implements cas.BlobStore: the local copy when held, else the bucket.
func (s *Store) Open(ctx context.Context, d digest.Digest) (cas.Blob, error) {
	if b, err := s.local.Open(ctx, d); err == nil {
		return b, nil
	} else if !errors.Is(err, cas.ErrNotFound) {
		return nil, err
	}
	obj, err := s.c.GetObject(ctx, s.bucket, s.key(blobKey(d)), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	info, err := obj.Stat()
	if err != nil {
		obj.Close()
		if isNotFound(err) {
			return nil, fmt.Errorf("blob %s: %w", d, cas.ErrNotFound)
		}
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	return &s3Blob{Object: obj, size: info.Size}, nil
}

type s3Blob struct {
	*minio.Object
	size int64
}

func (b *s3Blob) Size() int64 { return b.size }

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
	desc, err := w.Writer.Commit(ctx)
	if err != nil {
		return desc, err
	}
	return desc, w.s.upload(ctx, desc)
}

// upload puts a locally committed blob into the bucket once (a second
// writer's If-None-Match fails: the blob is there already).
func (s *Store) upload(ctx context.Context, desc ocispec.Descriptor) error {
	p, err := s.local.BlobPath(desc.Digest)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	// Already there (another replica): nothing to do. minio-go's multipart
	// path drops If-None-Match, so look first; the conditional header still
	// guards the single-PUT race.
	if _, err := s.c.StatObject(ctx, s.bucket, s.key(blobKey(desc.Digest)), minio.StatObjectOptions{}); err == nil {
		return nil
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: 64 << 20}
	opts.SetMatchETagExcept("*")
	if _, err := s.c.PutObject(ctx, s.bucket, s.key(blobKey(desc.Digest)), f, desc.Size, opts); err != nil && !isPrecondition(err) {
		return fmt.Errorf("blob %s: upload: %w", desc.Digest, err)
	}
	return nil
}

// Delete implements cas.BlobStore.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	if err := s.local.Delete(ctx, d); err != nil {
		return err
	}
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
// by ETag).
func (s *Store) index(ctx context.Context) (ocispec.Index, error) {
	s.mu.Lock()
	if s.idxETag != "" && time.Since(s.idxAt) < indexFresh {
		idx := s.idx
		s.mu.Unlock()
		return idx, nil
	}
	etag := s.idxETag
	s.mu.Unlock()
	if etag != "" {
		if info, err := s.c.StatObject(ctx, s.bucket, s.key("index.json"), minio.StatObjectOptions{}); err == nil && info.ETag == etag {
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

// update applies fn to index.json with If-Match on its ETag, retrying on
// 412 so concurrent replicas never lose each other's names.
func (s *Store) update(ctx context.Context, fn func(idx *ocispec.Index) (bool, error)) error {
	for attempt := 0; attempt < 20; attempt++ {
		idx, etag, err := s.readIndex(ctx)
		if err != nil {
			return err
		}
		changed, err := fn(&idx)
		if err != nil || !changed {
			return err
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
			return nil
		}
		if !isPrecondition(err) {
			return fmt.Errorf("index.json: %w", err)
		}
		time.Sleep(time.Duration(attempt+1) * 20 * time.Millisecond)
	}
	return errors.New("index.json: too many concurrent updates")
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
