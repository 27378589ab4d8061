package cas

import (
	"bytes"
	"context"
	_ "crypto/sha256" // register sha256 with go-digest
	_ "crypto/sha512" // register sha512 with go-digest
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Errors returned by stores, wrapped with the digest or name they concern.
var (
	ErrNotFound       = errors.New("not found")
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrSizeMismatch   = errors.New("size mismatch")
	ErrUnsupported    = errors.New("unsupported digest algorithm")
	ErrInvalidDigest  = errors.New("invalid digest")
	ErrInvalidName    = errors.New("invalid name")
)

// BlobStore holds content addressed by digest.
type BlobStore interface {
	// Stat returns the size of a committed blob, or ErrNotFound.
	Stat(ctx context.Context, dgst digest.Digest) (int64, error)
	// Open returns a reader of a committed blob.
	Open(ctx context.Context, dgst digest.Digest) (Blob, error)
	// Writer starts the one verified ingest path for expected. Its Size may
	// be -1 when unknown; its Digest must be set.
	Writer(ctx context.Context, expected ocispec.Descriptor) (Writer, error)
	// Delete removes a committed blob. Deleting a missing blob is no error.
	Delete(ctx context.Context, dgst digest.Digest) error
}

// NameStore maps names (index.json's org.opencontainers.image.ref.name) to
// descriptors.
type NameStore interface {
	// Resolve returns the descriptor recorded under name, or ErrNotFound.
	Resolve(ctx context.Context, name string) (ocispec.Descriptor, error)
	// Tag records desc under name, replacing what was there. A store
	// may refuse (ErrNotFound) a descriptor whose blob it does not hold.
	Tag(ctx context.Context, name string, desc ocispec.Descriptor) error
	// Untag removes name. A missing name is ErrNotFound.
	Untag(ctx context.Context, name string) error
	// List returns every named descriptor, sorted by name.
	List(ctx context.Context) ([]ocispec.Descriptor, error)
}

// Store is a complete backend: blobs and names.
type Store interface {
	BlobStore
	NameStore
}

// Blob is a committed blob opened for reading.
type Blob interface {
	io.ReadSeekCloser
	io.ReaderAt
	Size() int64
}

// Writer is an ingest in progress. Bytes written are hashed on the way in;
// Commit checks size and digest, makes the blob durable and visible. Until
// then nothing is visible under blobs/.
type Writer interface {
	io.Writer
	// Offset is the number of bytes written so far.
	Offset() int64
	// OpenReader opens an independent reader of the bytes written so far
	// (and later), valid after Commit or Abort until closed.
	OpenReader() (ReaderAtCloser, error)
	// Commit verifies size (unless the expected size was -1) and digest,
	// makes the blob durable and publishes it under blobs/.
	Commit(ctx context.Context) (ocispec.Descriptor, error)
	// Abort discards the ingest. Safe to call after Commit (no-op).
	Abort()
}

// ReaderAtCloser reads at offsets and must be closed.
type ReaderAtCloser interface {
	io.ReaderAt
	io.Closer
}

// Annotation keys Clowder writes on index.json descriptors.
const (
	AnnotationRefName       = ocispec.AnnotationRefName // org.opencontainers.image.ref.name
	AnnotationContainerdRef = "io.containerd.image.name"
	AnnotationUpstream      = "dev.clowder.upstream"
	AnnotationConfirmed     = "dev.clowder.confirmed"
)

var (
	algRE     = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*$`)
	encodedRE = regexp.MustCompile(`^[a-zA-Z0-9=_-]+$`)
)

var hexRE = map[digest.Algorithm]*regexp.Regexp{
	digest.SHA256: regexp.MustCompile(`^[a-f0-9]{64}$`),
	digest.SHA512: regexp.MustCompile(`^[a-f0-9]{128}$`),
}

// ValidateDigest checks that d is a well-formed sha256 or sha512 digest, so
// that a path built from it stays inside blobs/. Other algorithms are
// ErrUnsupported.
func ValidateDigest(d digest.Digest) error {
	s := string(d)
	i := -1
	for j := 0; j < len(s); j++ {
		if s[j] == ':' {
			i = j
			break
		}
	}
	if i <= 0 || i == len(s)-1 {
		return fmt.Errorf("%q: %w", s, ErrInvalidDigest)
	}
	alg := digest.Algorithm(s[:i])
	re, ok := hexRE[alg]
	if !ok {
		// Well-formed per the OCI digest grammar but not an algorithm we
		// store: unsupported. Anything else: invalid.
		if algRE.MatchString(string(alg)) && encodedRE.MatchString(s[i+1:]) {
			return fmt.Errorf("%q: %w", s, ErrUnsupported)
		}
		return fmt.Errorf("%q: %w", s, ErrInvalidDigest)
	}
	if !re.MatchString(s[i+1:]) {
		return fmt.Errorf("%q: %w", s, ErrInvalidDigest)
	}
	return nil
}

// Ingest writes r through the verified ingest path of s.
func Ingest(ctx context.Context, s BlobStore, expected ocispec.Descriptor, r io.Reader) (ocispec.Descriptor, error) {
	w, err := s.Writer(ctx, expected)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer w.Abort()
	if _, err := io.Copy(w, r); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w", expected.Digest, err)
	}
	return w.Commit(ctx)
}

// TagHeld records desc under name in s. body is desc's blob, already
// ingested by the caller: should a gc sweep it between its commit and this
// name (only a gc with no grace can; Tag refuses a descriptor whose blob
// the store does not hold with ErrNotFound), it is written again and named
// then, so a name never points at a blob the store lost on the way.
func TagHeld(ctx context.Context, s Store, name string, desc ocispec.Descriptor, body []byte) error {
	err := s.Tag(ctx, name, desc)
	for i := 0; i < 3 && errors.Is(err, ErrNotFound) && body != nil; i++ {
		if _, err = Ingest(ctx, s, ocispec.Descriptor{Digest: desc.Digest, Size: int64(len(body))}, bytes.NewReader(body)); err != nil {
			return err
		}
		err = s.Tag(ctx, name, desc)
	}
	return err
}

// Exists reports whether a blob is committed in s.
func Exists(ctx context.Context, s BlobStore, dgst digest.Digest) bool {
	_, err := s.Stat(ctx, dgst)
	return err == nil
}
