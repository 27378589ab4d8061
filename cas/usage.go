package cas

import (
	"context"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// NameUsage is what one name references.
type NameUsage struct {
	Desc ocispec.Descriptor
	Name string
	// Size is the total size of everything the name references; Held the
	// part that is in the store.
	Size, Held int64
	// HeldBlobs are the held descriptors the name references.
	HeldBlobs []ocispec.Descriptor
}

// Usage sums what the names of s reference: Referenced counts each distinct
// root manifest's held bytes once, Disk counts each held blob once, and
// Saved = Referenced - Disk is what content addressing saves (the same
// layer or model file under several names and protocols).
type Usage struct {
	Names      []NameUsage
	Blobs      int
	Referenced int64
	Disk       int64
	Saved      int64
}

// ComputeUsage walks every name of s.
func ComputeUsage(ctx context.Context, s Store) (Usage, error) {
	descs, err := s.List(ctx)
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	unique := map[digest.Digest]int64{}
	roots := map[digest.Digest]bool{}
	for _, d := range descs {
		nu := NameUsage{Desc: d, Name: d.Annotations[AnnotationRefName]}
		err := Walk(ctx, s, d, func(x ocispec.Descriptor, held bool) error {
			nu.Size += x.Size
			if held {
				nu.Held += x.Size
				nu.HeldBlobs = append(nu.HeldBlobs, x)
				unique[x.Digest] = x.Size
			}
			return nil
		})
		if err != nil {
			return Usage{}, err
		}
		if !roots[d.Digest] { // several names of one manifest share, that is not dedup
			roots[d.Digest] = true
			u.Referenced += nu.Held
		}
		u.Names = append(u.Names, nu)
	}
	for _, n := range unique {
		u.Disk += n
	}
	u.Blobs = len(unique)
	u.Saved = u.Referenced - u.Disk
	return u, nil
}
