package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/upstream"
)

// resolveName finds NAME in index.json: as given (the full name), else
// expanded the way docker does (alpine:3.20 -> docker.io/library/alpine:3.20).
func resolveName(ctx context.Context, a *app, name string) (string, ocispec.Descriptor, upstream.Route, error) {
	repo, ref, err := splitRef(name)
	if err != nil {
		return "", ocispec.Descriptor{}, upstream.Route{}, err
	}
	sep := ":"
	if strings.Contains(ref, ":") {
		sep = "@"
	}
	rt, rerr := a.router.RouteFull(repo)
	candidates := []string{repo + sep + ref}
	if rerr == nil {
		candidates = append(candidates, rt.Name+sep+ref)
	}
	for _, c := range candidates {
		if d, err := a.store.Resolve(ctx, c); err == nil {
			if rerr != nil {
				return c, d, upstream.Route{}, nil
			}
			return c, d, rt, nil
		}
	}
	return "", ocispec.Descriptor{}, upstream.Route{}, fmt.Errorf("%s is not in the cache (clowder pull it first; clowder ls lists names)", name)
}

// manifestOf reads a held manifest.
func manifestOf(ctx context.Context, a *app, d ocispec.Descriptor) (ocispec.Manifest, error) {
	b, err := cas.ReadAll(ctx, a.store, d.Digest, 4<<20)
	if err != nil {
		return ocispec.Manifest{}, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return ocispec.Manifest{}, fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	if len(m.Layers) == 0 {
		return m, fmt.Errorf("%s is not an image or artifact manifest with layers (an index? name one platform's manifest)", d.Digest)
	}
	return m, nil
}
