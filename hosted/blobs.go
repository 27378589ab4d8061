package hosted

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
)

// OpenBlob opens blob d of repo. A blob the repository does not link is
// ErrBlobUnknown even when its bytes are held (for another repository or
// the cache).
func (h *Store) OpenBlob(ctx context.Context, repo string, d digest.Digest) (cas.Blob, error) {
	if err := h.checkRepo(repo); err != nil {
		return nil, err
	}
	if err := cas.ValidateDigest(d); err != nil {
		return nil, err
	}
	if !h.linked(repo, d) {
		return nil, fmt.Errorf("%s in %s: %w", d, repo, ErrBlobUnknown)
	}
	b, err := h.cas.Open(ctx, d)
	if errors.Is(err, cas.ErrNotFound) {
		return nil, fmt.Errorf("%s in %s: %w", d, repo, ErrBlobUnknown)
	}
	return b, err
}

// DeleteBlob unlinks blob d from repo. Its bytes stay (other repositories,
// manifests or the cache may use them) until garbage collection.
func (h *Store) DeleteBlob(_ context.Context, repo string, d digest.Digest) error {
	if err := h.checkRepo(repo); err != nil {
		return err
	}
	if err := cas.ValidateDigest(d); err != nil {
		return err
	}
	if err := os.Remove(h.linkPath(repo, d)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s in %s: %w", d, repo, ErrBlobUnknown)
		}
		return err
	}
	return nil
}

// Mount links blob d into repo from the repository from, which must be a
// hosted repository that links it. With from empty (an anonymous mount) any
// hosted repository that links d will do. No client authentication exists
// yet, so "the client may read it" means "a hosted repository links it".
// A blob that cannot be mounted is ErrBlobUnknown; the caller then starts an
// ordinary upload.
func (h *Store) Mount(ctx context.Context, repo, from string, d digest.Digest) (ocispec.Descriptor, error) {
	if err := h.checkRepo(repo); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := cas.ValidateDigest(d); err != nil {
		return ocispec.Descriptor{}, err
	}
	src := from
	if from != "" {
		if h.checkRepo(from) != nil || !h.linked(from, d) {
			return ocispec.Descriptor{}, fmt.Errorf("%s in %s: %w", d, from, ErrBlobUnknown)
		}
	} else {
		err := h.walkRepos(func(r, _ string) bool {
			if h.linked(r, d) {
				src = r
				return false
			}
			return true
		})
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if src == "" {
			return ocispec.Descriptor{}, fmt.Errorf("%s in any hosted repository: %w", d, ErrBlobUnknown)
		}
	}
	size, err := h.cas.Stat(ctx, d)
	if err != nil {
		if errors.Is(err, cas.ErrNotFound) {
			return ocispec.Descriptor{}, fmt.Errorf("%s in %s: %w", d, src, ErrBlobUnknown)
		}
		return ocispec.Descriptor{}, err
	}
	if err := h.link(repo, d); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: size}, nil
}

// PutBlob ingests a whole blob (a monolithic upload) and links it into repo.
// size is the announced length, or -1.
func (h *Store) PutBlob(ctx context.Context, repo string, d digest.Digest, size int64, r io.Reader) (ocispec.Descriptor, error) {
	if err := h.checkRepo(repo); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := cas.ValidateDigest(d); err != nil {
		return ocispec.Descriptor{}, err
	}
	r, err := h.capUpload(0, size, r)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc, err := h.ingest(ctx, d, size, r)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := h.link(repo, d); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

// ingest writes r through the store's verified ingest path. Nothing is
// visible under blobs/ unless size and digest match.
func (h *Store) ingest(ctx context.Context, d digest.Digest, size int64, r io.Reader) (ocispec.Descriptor, error) {
	w, err := h.cas.Writer(ctx, ocispec.Descriptor{Digest: d, Size: size})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer w.Abort()
	if _, err := io.Copy(w, r); err != nil {
		if errors.Is(err, ErrUploadTooLarge) {
			return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w", d, err)
		}
		if errors.Is(err, cas.ErrSizeMismatch) {
			return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w: %v", d, ErrSizeInvalid, err)
		}
		return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w: %w", d, ErrUploadInvalid, err)
	}
	desc, err := w.Commit(ctx)
	switch {
	case errors.Is(err, cas.ErrDigestMismatch):
		return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w: %v", d, ErrDigestInvalid, err)
	case errors.Is(err, cas.ErrSizeMismatch):
		return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w: %v", d, ErrSizeInvalid, err)
	case err != nil:
		return ocispec.Descriptor{}, err
	}
	desc.MediaType = "application/octet-stream"
	return desc, nil
}

// capUpload bounds an upload that already holds have bytes and announces
// length more (-1: unknown) by MaxUploadSize: a length past it is refused at
// once, and the returned reader fails with ErrUploadTooLarge past it.
func (h *Store) capUpload(have, length int64, r io.Reader) (io.Reader, error) {
	max := h.MaxUploadSize
	if max <= 0 {
		return r, nil
	}
	if length >= 0 && have+length > max {
		return nil, fmt.Errorf("%d bytes, limit %d: %w", have+length, max, ErrUploadTooLarge)
	}
	return &capReader{r: r, left: max - have, max: max}, nil
}

type capReader struct {
	r         io.Reader
	left, max int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("more than %d bytes: %w", c.max, ErrUploadTooLarge)
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
