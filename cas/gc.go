package cas

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// GCResult reports a collection.
type GCResult struct {
	Marked      int
	Swept       int
	SweptBytes  int64
	KeptRecent  int // unreferenced but younger than the grace period
	SweptDigest []digest.Digest
}

// GCOptions tune a collection.
type GCOptions struct {
	// Roots are further digests to keep with everything they reference
	// (hosted repositories' blob links, cached hub documents).
	Roots []digest.Digest
	// Grace keeps unreferenced blobs younger than this: a blob just
	// committed whose name is not written yet is never swept.
	Grace time.Duration
	// DryRun reports without removing.
	DryRun bool
}

// BlobInfo describes a committed blob in a listing.
type BlobInfo struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// Collectable is a store GC can sweep: its names are updated atomically and
// its blobs can be listed.
type Collectable interface {
	Store
	// Update runs fn on the names and writes them when fn reports a change.
	Update(fn func(idx *ocispec.Index) (changed bool, err error)) error
	// Blobs calls fn for every committed blob.
	Blobs(ctx context.Context, fn func(BlobInfo) error) error
}

// GC collects the layout (see Collect). It holds the index lock throughout,
// so no name is added meanwhile; fills in progress live in the ingest
// folder and are untouched.
func (l *Layout) GC(ctx context.Context, opts GCOptions) (GCResult, error) {
	return Collect(ctx, l, opts)
}

// Collect marks everything reachable from the names (through indexes and
// manifests to configs and layers) and from opts.Roots, then sweeps the
// other blobs older than opts.Grace. It runs inside s.Update, so a store
// that locks its names (the local layout) adds none meanwhile; elsewhere the
// grace period covers a blob committed just before its name. A blob a later
// name needs again is simply fetched again.
func Collect(ctx context.Context, s Collectable, opts GCOptions) (GCResult, error) {
	var res GCResult
	err := s.Update(func(idx *ocispec.Index) (bool, error) {
		marked := map[digest.Digest]bool{}
		mark := func(d ocispec.Descriptor) error {
			return Walk(ctx, s, d, func(x ocispec.Descriptor, _ bool) error {
				marked[x.Digest] = true
				return nil
			})
		}
		for _, d := range idx.Manifests {
			if err := mark(d); err != nil {
				return false, err
			}
			for _, a := range []string{"dev.clowder.hf.info"} {
				if v := d.Annotations[a]; v != "" {
					marked[digest.Digest(v)] = true
				}
			}
		}
		for _, r := range opts.Roots {
			marked[r] = true // hosted manifests are names too; links are leaves
		}
		res.Marked = len(marked)
		cutoff := time.Now().Add(-opts.Grace)
		var sweep []BlobInfo
		err := s.Blobs(ctx, func(b BlobInfo) error {
			if marked[b.Digest] {
				return nil
			}
			if b.ModTime.After(cutoff) {
				res.KeptRecent++
				return nil
			}
			sweep = append(sweep, b)
			return nil
		})
		if err != nil {
			return false, err
		}
		for _, b := range sweep {
			if !opts.DryRun {
				if err := s.Delete(ctx, b.Digest); err != nil {
					return false, err
				}
			}
			res.Swept++
			res.SweptBytes += b.Size
			res.SweptDigest = append(res.SweptDigest, b.Digest)
		}
		return false, nil
	})
	return res, err
}

// Blobs implements Collectable: every file under blobs/sha256 and
// blobs/sha512 named by a valid digest.
func (l *Layout) Blobs(ctx context.Context, fn func(BlobInfo) error) error {
	return l.blobEntries(ctx, func(_ string, d digest.Digest, e os.DirEntry) error {
		if e.IsDir() || ValidateDigest(d) != nil {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return nil
		}
		return fn(BlobInfo{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()})
	})
}

// blobEntries calls fn for every entry of blobs/sha256 and blobs/sha512
// (stray files included) with its path and the digest its name says.
func (l *Layout) blobEntries(ctx context.Context, fn func(path string, d digest.Digest, e os.DirEntry) error) error {
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
			if err := fn(filepath.Join(dir, e.Name()), digest.NewDigestFromEncoded(alg, e.Name()), e); err != nil {
				return err
			}
		}
	}
	return nil
}
