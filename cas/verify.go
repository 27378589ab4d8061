package cas

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"

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
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		dir := filepath.Join(l.root, "blobs", alg.String())
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return err
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := filepath.Join(dir, e.Name())
			d := digest.NewDigestFromEncoded(alg, e.Name())
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
		}
	}
	return nil
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
