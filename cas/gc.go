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

// GC marks everything reachable from index.json names (through indexes and
// manifests to configs and layers) and from opts.Roots, then sweeps the
// other blobs. It holds the index lock throughout, so no name is added
// meanwhile; fills in progress live in the ingest folder and are untouched.
// A blob a later name needs again is simply fetched again.
func (l *Layout) GC(ctx context.Context, opts GCOptions) (GCResult, error) {
	var res GCResult
	err := l.Update(func(idx *ocispec.Index) (bool, error) {
		marked := map[digest.Digest]bool{}
		mark := func(d ocispec.Descriptor) error {
			return Walk(ctx, l, d, func(x ocispec.Descriptor, _ bool) error {
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
		for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
			dir := filepath.Join(l.root, "blobs", alg.String())
			ents, err := os.ReadDir(dir)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				return false, err
			}
			for _, e := range ents {
				d := digest.NewDigestFromEncoded(alg, e.Name())
				if marked[d] {
					continue
				}
				fi, err := e.Info()
				if err != nil {
					continue
				}
				if fi.ModTime().After(cutoff) {
					res.KeptRecent++
					continue
				}
				if !opts.DryRun {
					if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
						return false, err
					}
				}
				res.Swept++
				res.SweptBytes += fi.Size()
				res.SweptDigest = append(res.SweptDigest, d)
			}
		}
		return false, nil
	})
	return res, err
}
