package hosted

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/upstream"
	"github.com/clowder-dev/clowder/upstream/oci"
)

// Manifest is a stored manifest.
type Manifest struct {
	Desc ocispec.Descriptor
	Body []byte
	// Subject is the manifest's subject, if it has one.
	Subject *ocispec.Descriptor
	// Tags are the tags the manifest was pushed under.
	Tags []string
}

// manifestFields are the parts of an image manifest or index that are
// validated; the bytes are stored as the client sent them.
type manifestFields struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == oci.MediaTypeDockerManifestList
}

func isImage(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == oci.MediaTypeDockerManifest
}

// PutManifest stores body as manifest ref (a tag or a digest) of repo, plus
// the extra tags (the ?tag= parameters of a push by digest). Every blob the
// manifest references must be linked into repo and every manifest an index
// references must be in repo (ErrManifestBlobUnknown), except layers that
// carry URLs (non-distributable layers, fetched from elsewhere). The
// subject need not exist.
func (h *Store) PutManifest(ctx context.Context, repo, ref, contentType string, body []byte, tags []string) (Manifest, error) {
	if err := h.checkRepo(repo); err != nil {
		return Manifest{}, err
	}
	if len(body) > MaxManifestSize {
		return Manifest{}, fmt.Errorf("%d bytes, limit %d: %w", len(body), MaxManifestSize, ErrManifestTooLarge)
	}
	var d digest.Digest
	if proxy.IsDigest(ref) {
		d = digest.Digest(ref)
		if err := cas.ValidateDigest(d); err != nil {
			return Manifest{}, err
		}
		if got := d.Algorithm().FromBytes(body); got != d {
			return Manifest{}, fmt.Errorf("manifest %s: body has digest %s: %w", d, got, ErrDigestInvalid)
		}
	} else {
		tags = []string{ref} // ?tag= parameters only go with a push by digest
		d = digest.Canonical.FromBytes(body)
	}
	for _, t := range tags {
		if !proxy.ValidTag(t) {
			return Manifest{}, fmt.Errorf("%q: %w", t, proxy.ErrInvalidTag)
		}
	}
	var m manifestFields
	if err := upstream.CheckJSONDepth(body, upstream.MaxJSONDepth); err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w: %v", d, ErrManifestInvalid, err)
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w: %v", d, ErrManifestInvalid, err)
	}
	mt := m.MediaType
	if mt == "" {
		ct, _, _ := mime.ParseMediaType(contentType)
		switch {
		case isIndex(ct) || isImage(ct):
			mt = ct
		case m.Manifests != nil:
			mt = ocispec.MediaTypeImageIndex
		case m.Config != nil:
			mt = ocispec.MediaTypeImageManifest
		}
	}
	if err := h.verify(ctx, repo, d, mt, &m); err != nil {
		return Manifest{}, err
	}
	if _, err := cas.Ingest(ctx, h.cas, ocispec.Descriptor{Digest: d, Size: int64(len(body))}, bytes.NewReader(body)); err != nil {
		return Manifest{}, err
	}
	desc := ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(body)), ArtifactType: artifactType(mt, &m)}
	if m.Subject != nil {
		if err := h.addReferrer(repo, *m.Subject, desc, m.Annotations); err != nil {
			return Manifest{}, err
		}
	}
	if err := cas.TagHeld(ctx, h.cas, repo+"@"+d.String(), desc, body); err != nil {
		return Manifest{}, err
	}
	for _, t := range tags {
		if err := cas.TagHeld(ctx, h.cas, repo+":"+t, desc, body); err != nil {
			return Manifest{}, err
		}
	}
	return Manifest{Desc: desc, Body: body, Subject: m.Subject, Tags: tags}, nil
}

// artifactType is what the referrers API reports for a manifest: its
// artifactType, else (image manifests only) its config's media type.
func artifactType(mt string, m *manifestFields) string {
	if m.ArtifactType != "" {
		return m.ArtifactType
	}
	if isImage(mt) && m.Config != nil {
		return m.Config.MediaType
	}
	return ""
}

func (h *Store) verify(ctx context.Context, repo string, d digest.Digest, mt string, m *manifestFields) error {
	invalid := func(format string, a ...any) error {
		return fmt.Errorf("manifest %s: %w: %s", d, ErrManifestInvalid, fmt.Sprintf(format, a...))
	}
	if m.MediaType != "" && !isIndex(m.MediaType) && !isImage(m.MediaType) {
		return invalid("media type %q is not an OCI or Docker v2 image manifest or index", m.MediaType)
	}
	if m.SchemaVersion != 2 {
		return invalid("schemaVersion %d, want 2", m.SchemaVersion)
	}
	check := func(what string, x ocispec.Descriptor) error {
		if err := cas.ValidateDigest(x.Digest); err != nil {
			return invalid("%s: %v", what, err)
		}
		if x.Size < 0 {
			return invalid("%s %s: negative size", what, x.Digest)
		}
		if x.Data != nil {
			if int64(len(x.Data)) != x.Size || x.Digest.Algorithm().FromBytes(x.Data) != x.Digest {
				return invalid("%s %s: data field does not match the digest and size", what, x.Digest)
			}
		}
		return nil
	}
	if m.Subject != nil {
		if err := check("subject", *m.Subject); err != nil {
			return err
		}
	}
	switch {
	case isIndex(mt):
		if m.Config != nil || m.Layers != nil {
			return invalid("an index has no config or layers")
		}
		for _, x := range m.Manifests {
			if err := check("manifest", x); err != nil {
				return err
			}
			if !h.hasManifest(ctx, repo, x.Digest) {
				return fmt.Errorf("manifest %s: %w: %s", d, ErrManifestBlobUnknown, x.Digest)
			}
		}
	case isImage(mt):
		if m.Config == nil {
			return invalid("no config")
		}
		if m.Manifests != nil {
			return invalid("an image manifest has no manifests list")
		}
		for i, x := range append([]ocispec.Descriptor{*m.Config}, m.Layers...) {
			what := "config"
			if i > 0 {
				what = fmt.Sprintf("layers[%d]", i-1)
			}
			if err := check(what, x); err != nil {
				return err
			}
			if len(x.URLs) > 0 {
				continue // non-distributable: the client fetches it from its URLs
			}
			if !h.linked(repo, x.Digest) || !cas.Exists(ctx, h.cas, x.Digest) {
				return fmt.Errorf("manifest %s: %w: %s %s", d, ErrManifestBlobUnknown, what, x.Digest)
			}
		}
	default:
		return invalid("cannot tell the media type (no mediaType field, Content-Type or recognisable fields)")
	}
	return nil
}

// hasManifest reports whether repo holds manifest d by digest or by a tag.
func (h *Store) hasManifest(ctx context.Context, repo string, d digest.Digest) bool {
	_, err := h.resolveDigest(ctx, repo, d)
	return err == nil
}

func (h *Store) resolveDigest(ctx context.Context, repo string, d digest.Digest) (ocispec.Descriptor, error) {
	if desc, err := h.cas.Resolve(ctx, repo+"@"+d.String()); err == nil {
		return desc, nil
	}
	descs, err := h.cas.List(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, x := range descs {
		if x.Digest == d && strings.HasPrefix(x.Annotations[cas.AnnotationRefName], repo+":") {
			return x, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s@%s: %w", repo, d, ErrManifestUnknown)
}

// GetManifest returns manifest ref (tag or digest) of repo.
func (h *Store) GetManifest(ctx context.Context, repo, ref string) (Manifest, error) {
	if err := h.checkRepo(repo); err != nil {
		return Manifest{}, err
	}
	var desc ocispec.Descriptor
	if proxy.IsDigest(ref) {
		d := digest.Digest(ref)
		if err := cas.ValidateDigest(d); err != nil {
			return Manifest{}, err
		}
		x, err := h.resolveDigest(ctx, repo, d)
		if err != nil {
			return Manifest{}, err
		}
		desc = x
	} else {
		if !proxy.ValidTag(ref) {
			return Manifest{}, fmt.Errorf("%q: %w", ref, proxy.ErrInvalidTag)
		}
		x, err := h.cas.Resolve(ctx, repo+":"+ref)
		if errors.Is(err, cas.ErrNotFound) {
			return Manifest{}, fmt.Errorf("%s:%s: %w", repo, ref, ErrManifestUnknown)
		}
		if err != nil {
			return Manifest{}, err
		}
		desc = x
	}
	body, err := cas.ReadAll(ctx, h.cas, desc.Digest, MaxManifestSize)
	if errors.Is(err, cas.ErrNotFound) {
		return Manifest{}, fmt.Errorf("%s@%s: bytes missing: %w", repo, desc.Digest, ErrManifestUnknown)
	}
	if err != nil {
		return Manifest{}, err
	}
	out := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: int64(len(body)), ArtifactType: desc.ArtifactType}
	if out.MediaType == "" {
		out.MediaType = oci.MediaTypeOf(body, "")
	}
	return Manifest{Desc: out, Body: body}, nil
}

// DeleteManifest deletes a tag, or a manifest by digest together with every
// tag that points at it. The bytes stay until garbage collection.
func (h *Store) DeleteManifest(ctx context.Context, repo, ref string) error {
	if err := h.checkRepo(repo); err != nil {
		return err
	}
	if !proxy.IsDigest(ref) {
		if !proxy.ValidTag(ref) {
			return fmt.Errorf("%q: %w", ref, proxy.ErrInvalidTag)
		}
		err := h.cas.Untag(ctx, repo+":"+ref)
		if errors.Is(err, cas.ErrNotFound) {
			return fmt.Errorf("%s:%s: %w", repo, ref, ErrManifestUnknown)
		}
		return err
	}
	d := digest.Digest(ref)
	if err := cas.ValidateDigest(d); err != nil {
		return err
	}
	descs, err := h.cas.List(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, x := range descs {
		n := x.Annotations[cas.AnnotationRefName]
		if x.Digest == d && (n == repo+"@"+d.String() || strings.HasPrefix(n, repo+":")) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("%s@%s: %w", repo, d, ErrManifestUnknown)
	}
	if body, err := cas.ReadAll(ctx, h.cas, d, MaxManifestSize); err == nil {
		var m manifestFields
		if json.Unmarshal(body, &m) == nil && m.Subject != nil && cas.ValidateDigest(m.Subject.Digest) == nil {
			if err := os.Remove(h.referrerPath(repo, m.Subject.Digest, d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	for _, n := range names {
		if err := h.cas.Untag(ctx, n); err != nil && !errors.Is(err, cas.ErrNotFound) {
			return err
		}
	}
	return nil
}

// Tags returns the tags of repo, sorted. A repository with no content at
// all is ErrNameUnknown.
func (h *Store) Tags(ctx context.Context, repo string) ([]string, error) {
	if err := h.checkRepo(repo); err != nil {
		return nil, err
	}
	descs, err := h.cas.List(ctx)
	if err != nil {
		return nil, err
	}
	tags := []string{}
	for _, x := range descs {
		if t, ok := strings.CutPrefix(x.Annotations[cas.AnnotationRefName], repo+":"); ok && proxy.ValidTag(t) {
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 && !h.repoKnown(ctx, repo) {
		return nil, fmt.Errorf("%s: %w", repo, ErrNameUnknown)
	}
	sort.Strings(tags)
	return tags, nil
}

func (h *Store) referrerPath(repo string, subject, d digest.Digest) string {
	return filepath.Join(h.repoDir(repo), referrersDir, subject.Algorithm().String(), subject.Encoded(), d.Algorithm().String()+"-"+d.Encoded()+".json")
}

// addReferrer records desc (with the manifest's annotations) as a referrer
// of subject in repo.
func (h *Store) addReferrer(repo string, subject, desc ocispec.Descriptor, annotations map[string]string) error {
	desc.Annotations = annotations
	b, err := json.Marshal(desc)
	if err != nil {
		return err
	}
	p := h.referrerPath(repo, subject.Digest, desc.Digest)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return err
	}
	syncDir(filepath.Dir(p))
	return nil
}

// Referrers returns the manifests of repo whose subject is d, filtered by
// artifactType when it is set, sorted by digest. No referrers is an empty
// list, never an error.
func (h *Store) Referrers(_ context.Context, repo string, d digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	if err := h.checkRepo(repo); err != nil {
		return nil, err
	}
	if err := cas.ValidateDigest(d); err != nil {
		return nil, err
	}
	dir := filepath.Join(h.repoDir(repo), referrersDir, d.Algorithm().String(), d.Encoded())
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	out := []ocispec.Descriptor{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // deleted meanwhile
		}
		var x ocispec.Descriptor
		if json.Unmarshal(b, &x) != nil {
			continue
		}
		if artifactType != "" && x.ArtifactType != artifactType {
			continue
		}
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}
