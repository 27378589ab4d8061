package cas

import (
	"context"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
)

// VerifyResult is the verdict on one blob file.
type VerifyResult struct {
	Digest digest.Digest
	Path   string
	Size   int64
	// Err is nil for a good blob; ErrDigestMismatch for damaged content,
	// ErrInvalidDigest for a file whose name is no digest.
	Err error
	// Removed is set when repair removed the file.
	Removed bool
}

// Verify re-hashes every blob under blobs/ and calls fn for each. With
// repair, damaged blobs and stray files are removed so the next request
// refetches them.
func (l *Layout) Verify(ctx context.Context, repair bool, fn func(VerifyResult)) error {
	return l.blobEntries(ctx, func(p string, d digest.Digest, e os.DirEntry) error {
		res := VerifyResult{Digest: d, Path: p}
		if fi, err := e.Info(); err == nil {
			res.Size = fi.Size()
		}
		if e.IsDir() || ValidateDigest(d) != nil {
			res.Err = ErrInvalidDigest
		} else if err := hashFile(p, d); err != nil {
			res.Err = err
		}
		if res.Err != nil && repair {
			if os.RemoveAll(p) == nil {
				res.Removed = true
			}
		}
		fn(res)
		return nil
	})
}

func hashFile(p string, d digest.Digest) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	v := d.Verifier()
	if _, err := io.CopyBuffer(v, f, make([]byte, 1<<20)); err != nil {
		return err
	}
	if !v.Verified() {
		return ErrDigestMismatch
	}
	return nil
}

// StoredOpener is the optional ability of a store that keeps local copies
// of what it stores elsewhere (the s3 backend): OpenStored streams the
// stored blob itself, past any local copy.
type StoredOpener interface {
	OpenStored(ctx context.Context, d digest.Digest) (io.ReadCloser, error)
}

// VerifyStore re-hashes every blob of s (streamed through OpenStored when s
// has it, so a local copy does not hide a damaged stored blob, else Open)
// and calls fn for each; with repair, damaged blobs are deleted. It is
// Verify for stores that are not a local layout (the s3 backend); Path is
// the digest.
func VerifyStore(ctx context.Context, s Collectable, repair bool, fn func(VerifyResult)) error {
	open := func(d digest.Digest) (io.ReadCloser, error) { return s.Open(ctx, d) }
	if so, ok := s.(StoredOpener); ok {
		open = func(d digest.Digest) (io.ReadCloser, error) { return so.OpenStored(ctx, d) }
	}
	return s.Blobs(ctx, func(b BlobInfo) error {
		res := VerifyResult{Digest: b.Digest, Path: b.Digest.String(), Size: b.Size}
		f, err := open(b.Digest)
		if err != nil {
			return err
		}
		v := b.Digest.Verifier()
		_, err = io.Copy(v, f)
		f.Close()
		if err != nil {
			return err
		}
		if !v.Verified() {
			res.Err = ErrDigestMismatch
			if repair && s.Delete(ctx, b.Digest) == nil {
				res.Removed = true
			}
		}
		fn(res)
		return nil
	})
}
