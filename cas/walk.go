package cas

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxWalkManifest bounds a manifest read while walking references.
const maxWalkManifest = 64 << 20

// Walk calls fn for desc and every descriptor it references (index children,
// a manifest's config, layers, blobs and subject), depth first, each digest
// once. Manifests that are not held are reported but not descended into;
// blobs need not be held. It is the mark phase of GC and the sizing of ls.
func Walk(ctx context.Context, s BlobStore, desc ocispec.Descriptor, fn func(d ocispec.Descriptor, held bool) error) error {
	seen := map[digest.Digest]bool{}
	var walk func(d ocispec.Descriptor, depth int) error
	walk = func(d ocispec.Descriptor, depth int) error {
		if seen[d.Digest] || depth > 8 {
			return nil
		}
		seen[d.Digest] = true
		size, err := s.Stat(ctx, d.Digest)
		held := err == nil
		if err := fn(d, held); err != nil {
			return err
		}
		if !held || !isManifestish(d.MediaType) || size > maxWalkManifest {
			return nil
		}
		b, err := ReadAll(ctx, s, d.Digest, maxWalkManifest)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			return err
		}
		var doc struct {
			MediaType string               `json:"mediaType"`
			Manifests []ocispec.Descriptor `json:"manifests"`
			Config    *ocispec.Descriptor  `json:"config"`
			Layers    []ocispec.Descriptor `json:"layers"`
			Blobs     []ocispec.Descriptor `json:"blobs"`
			Subject   *ocispec.Descriptor  `json:"subject"`
		}
		if json.Unmarshal(b, &doc) != nil {
			return nil
		}
		var refs []ocispec.Descriptor
		refs = append(refs, doc.Manifests...)
		if doc.Config != nil && doc.Config.Digest != "" {
			refs = append(refs, *doc.Config)
		}
		refs = append(refs, doc.Layers...)
		refs = append(refs, doc.Blobs...)
		for _, r := range refs {
			if ValidateDigest(r.Digest) != nil {
				continue
			}
			if r.MediaType == "" && len(doc.Manifests) > 0 {
				r.MediaType = ocispec.MediaTypeImageManifest
			}
			if err := walk(r, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if desc.MediaType == "" {
		desc.MediaType = ocispec.MediaTypeImageManifest
	}
	return walk(desc, 0)
}

func isManifestish(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json":
		return true
	}
	return false
}
