package cas

import (
	"context"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// AnnotationLastUsed records when a name was last served (RFC 3339).
const AnnotationLastUsed = "dev.clowder.last-used"

// Annotate sets annotations on named entries of index.json in one locked
// update (names not present are skipped).
func (l *Layout) Annotate(ctx context.Context, set map[string]map[string]string) error {
	return Annotate(ctx, l, set)
}

// Updater is a name store whose names can be updated atomically.
type Updater interface {
	Update(fn func(idx *ocispec.Index) (changed bool, err error)) error
}

// Annotate sets annotations on named entries of u in one update (names not
// present are skipped).
func Annotate(_ context.Context, u Updater, set map[string]map[string]string) error {
	if len(set) == 0 {
		return nil
	}
	return u.Update(func(idx *ocispec.Index) (bool, error) {
		changed := false
		for i, d := range idx.Manifests {
			kv, ok := set[d.Annotations[AnnotationRefName]]
			if !ok {
				continue
			}
			ann := map[string]string{}
			for k, v := range d.Annotations {
				ann[k] = v
			}
			for k, v := range kv {
				if ann[k] != v {
					ann[k] = v
					changed = true
				}
			}
			idx.Manifests[i].Annotations = ann
		}
		return changed, nil
	})
}

// LastUse is when a name was last served (else last confirmed upstream).
func LastUse(d ocispec.Descriptor) time.Time {
	for _, k := range []string{AnnotationLastUsed, AnnotationConfirmed} {
		if t, err := time.Parse(time.RFC3339Nano, d.Annotations[k]); err == nil {
			return t
		}
	}
	return time.Time{}
}

// EvictPlan picks the least recently used names to remove so that what the
// remaining names reference fits in maxBytes. Pinned names are never picked.
// Sharing is accounted for: a blob only frees space once no remaining name
// references it.
func EvictPlan(ctx context.Context, s Store, maxBytes int64, pinned func(name string) bool) ([]string, int64, error) {
	u, err := ComputeUsage(ctx, s)
	if err != nil || u.Disk <= maxBytes {
		return nil, u.Disk, err
	}
	names := append([]NameUsage(nil), u.Names...)
	sort.SliceStable(names, func(i, j int) bool { return LastUse(names[i].Desc).Before(LastUse(names[j].Desc)) })
	// refs counts, per blob, the names that reference it (from the walk
	// ComputeUsage already made).
	refs := map[digest.Digest]map[string]bool{}
	for _, n := range names {
		for _, x := range n.HeldBlobs {
			if refs[x.Digest] == nil {
				refs[x.Digest] = map[string]bool{}
			}
			refs[x.Digest][n.Name] = true
		}
	}
	disk := u.Disk
	var out []string
	for _, n := range names {
		if disk <= maxBytes {
			break
		}
		if pinned(n.Name) {
			continue
		}
		out = append(out, n.Name)
		for _, x := range n.HeldBlobs {
			delete(refs[x.Digest], n.Name)
			if len(refs[x.Digest]) == 0 {
				disk -= x.Size
				delete(refs, x.Digest)
			}
		}
	}
	return out, disk, nil
}
