package proxy

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/upstream"
	hf "github.com/clowder-dev/clowder/upstream/huggingface"
)

// Media types of Clowder's OCI view of a Hugging Face repo revision (the
// design notes' application/vnd.clowder.aimage.* family).
const (
	MediaTypeAimageManifest = "application/vnd.clowder.aimage.manifest.v1"
	MediaTypeAimageConfig   = "application/vnd.clowder.aimage.config.v1+json"
	MediaTypeAimageFile     = "application/vnd.clowder.aimage.file.v1"
	MediaTypeGGUF           = "application/vnd.clowder.aimage.model.gguf.layer.v1"
	MediaTypeSafetensors    = "application/vnd.clowder.aimage.model.safetensors.layer.v1"
	MediaTypeONNX           = "application/vnd.clowder.aimage.model.onnx.layer.v1"

	AnnotationHFRepo   = "dev.clowder.hf.repo"
	AnnotationHFType   = "dev.clowder.hf.type"
	AnnotationHFCommit = "dev.clowder.hf.commit"
	AnnotationHFInfo   = "dev.clowder.hf.info" // index.json: digest of the cached repo-info JSON
	AnnotationPrivate  = "dev.clowder.private" // index.json: content that needs credentials upstream
)

// LayerMediaType returns the view's media type for a repo file.
func LayerMediaType(p string) string {
	switch strings.ToLower(path.Ext(p)) {
	case ".gguf":
		return MediaTypeGGUF
	case ".safetensors":
		return MediaTypeSafetensors
	case ".onnx":
		return MediaTypeONNX
	}
	return MediaTypeAimageFile
}

// maxRegularFile bounds a non-LFS file held in memory while hashed (the hub
// moves anything over 10 MB to LFS).
const maxRegularFile = 64 << 20

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// IsCommit reports whether rev is a full commit id.
func IsCommit(rev string) bool { return commitRE.MatchString(rev) }

// RevisionTag maps a revision to an OCI tag by a reversible rule: "/"
// becomes "--" (refs/pr/1 -> refs--pr--1); a commit id is its own tag. It
// returns "" for revisions no tag can hold.
func RevisionTag(rev string) string {
	t := strings.ReplaceAll(rev, "/", "--")
	if !ValidTag(t) {
		return ""
	}
	return t
}

// TagRevision reverses RevisionTag.
func TagRevision(tag string) string { return strings.ReplaceAll(tag, "--", "/") }

// HFFile is one file of a commit.
type HFFile struct {
	Path   string        `json:"path"`
	Size   int64         `json:"size"`
	OID    string        `json:"oid"`    // git blob sha1 (of the pointer for LFS files)
	Digest digest.Digest `json:"digest"` // sha256 of the content
	LFS    bool          `json:"lfs,omitempty"`
}

// ETag is what the hub sends as the file's (linked) ETag: the sha256 for LFS
// files, the git sha1 for regular ones.
func (f HFFile) ETag() string {
	if f.LFS {
		return f.Digest.Encoded()
	}
	return f.OID
}

// hfConfig is the view's config blob: deterministic from the commit's tree.
type hfConfig struct {
	Type   string   `json:"type"`
	Repo   string   `json:"repo"`
	Commit string   `json:"commit"`
	Files  []HFFile `json:"files"`
}

// HFView is a repo revision resolved to a commit, with its file list.
type HFView struct {
	Repo     hf.RepoRef
	Commit   string
	Files    []HFFile
	Manifest []byte
	Desc     ocispec.Descriptor
	// Stale is set when the upstream could not confirm the revision.
	Stale bool
	// InfoDigest is the cached repo-info JSON of the revision, if any.
	InfoDigest digest.Digest
	// Private is set for private and gated repos.
	Private bool
}

// File returns the file at p.
func (v *HFView) File(p string) (HFFile, bool) {
	i := sort.Search(len(v.Files), func(i int) bool { return v.Files[i].Path >= p })
	if i < len(v.Files) && v.Files[i].Path == p {
		return v.Files[i], true
	}
	return HFFile{}, false
}

// HF serves Hugging Face repos through the cache.
type HF struct {
	p      *Proxy
	up     *upstream.Upstream
	client *hf.Client

	mu       sync.Mutex
	resolved map[string]time.Time // name -> last confirmation (this process)
	access   map[string]accessEntry
	// pending are revision names learned from repo-info answers whose
	// commit has no view yet, by the commit's name (base:commit): they are
	// added when the view is built.
	pending map[string]map[string]map[string]string // base:commit -> tag -> annotations
}

// NewHF returns the Hugging Face front of p for upstream up.
func NewHF(p *Proxy, up *upstream.Upstream, client *hf.Client) *HF {
	return &HF{p: p, up: up, client: client, resolved: map[string]time.Time{}}
}

// Client returns the hub client.
func (h *HF) Client() *hf.Client { return h.client }

// Upstream returns the configured upstream.
func (h *HF) Upstream() *upstream.Upstream { return h.up }

// OCIName is the index.json name (without tag) of a repo: lower-case, under
// the upstream's name, datasets and spaces under datasets/ and spaces/.
func (h *HF) OCIName(r hf.RepoRef) string {
	n := h.up.Name + "/"
	if r.Type != hf.Model {
		n += r.Type + "s/"
	}
	return n + strings.ToLower(r.ID)
}

// Resolve returns the view of repo at rev: from the cache when the revision
// was confirmed within the upstream's tag_ttl (a commit id always is), else
// from the hub, else (hub unreachable) the last resolution.
func (h *HF) Resolve(ctx context.Context, repo hf.RepoRef, rev, auth string) (*HFView, error) {
	if rev == "" {
		rev = "main"
	}
	base := h.OCIName(repo)
	if !ValidName(base) {
		return nil, fmt.Errorf("repo id %q: %w", repo.ID, ErrInvalidName)
	}
	tag := RevisionTag(rev)
	var cached *HFView
	if tag != "" {
		if d, err := h.p.store.Resolve(ctx, base+":"+tag); err == nil {
			if v, err := h.loadView(ctx, repo, d); err == nil {
				cached = v
				if IsCommit(rev) || h.fresh(base+":"+tag, d) {
					h.p.touch(base + ":" + tag)
					return v, nil
				}
			}
		}
	}
	if tag != "" {
		h.p.touch(base + ":" + tag)
	}
	v, err := h.p.flight(ctx, "hf:"+base+"@"+rev, func() (any, error) {
		return h.refresh(ctx, repo, rev, auth)
	})
	if err == nil {
		return v.(*HFView), nil
	}
	var he *hf.Error
	if cached != nil && !(errors.As(err, &he) && (he.Up.Status == 404 || he.Up.Status == 401 || he.Up.Status == 403)) {
		c := *cached
		c.Stale = true
		return &c, nil
	}
	return nil, err
}

func (h *HF) fresh(name string, d ocispec.Descriptor) bool {
	ttl := h.up.TTL()
	if ttl <= 0 {
		return false
	}
	h.mu.Lock()
	t, ok := h.resolved[name]
	h.mu.Unlock()
	if !ok {
		var err error
		if t, err = time.Parse(time.RFC3339Nano, d.Annotations[cas.AnnotationConfirmed]); err != nil {
			return false
		}
	}
	return h.p.opts.Now().Sub(t) < ttl
}

// refresh asks the hub which commit rev is, builds the commit's view unless
// held, and names it by commit and by revision.
func (h *HF) refresh(ctx context.Context, repo hf.RepoRef, rev, auth string) (*HFView, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.p.opts.UpstreamTimeout)
	defer cancel()
	rctx, rcancel := context.WithTimeout(ctx, h.p.opts.RevalidateTimeout)
	info, err := h.client.Info(rctx, repo, rev, "", auth)
	rcancel()
	if err != nil {
		return nil, err
	}
	var meta struct {
		ID  string `json:"id"`
		SHA string `json:"sha"`
	}
	if err := json.Unmarshal(info, &meta); err != nil || !IsCommit(meta.SHA) {
		return nil, &upstream.Error{Method: "GET", URL: h.client.Base().String() + repo.APIPrefix(), Status: 502, Message: "repo info has no commit sha"}
	}
	if meta.ID != "" && strings.EqualFold(meta.ID, repo.ID) {
		repo.ID = meta.ID // the hub's spelling
	}
	base := h.OCIName(repo)
	var v *HFView
	if d, err := h.p.store.Resolve(ctx, base+":"+meta.SHA); err == nil {
		v, _ = h.loadView(ctx, repo, d)
	}
	if v == nil {
		if v, err = h.build(ctx, repo, meta.SHA, auth); err != nil {
			return nil, err
		}
	}
	ann := h.infoAnnotations(ctx, info)
	v.Private = ann[AnnotationPrivate] == "true"
	if err := h.name(ctx, base+":"+meta.SHA, v, ann); err != nil {
		return nil, err
	}
	if tag := RevisionTag(rev); tag != "" && tag != meta.SHA {
		if err := h.name(ctx, base+":"+tag, v, ann); err != nil {
			return nil, err
		}
	}
	h.namePending(ctx, base+":"+meta.SHA, v)
	v.InfoDigest = digest.Digest(ann[AnnotationHFInfo])
	return v, nil
}

// infoAnnotations keeps a repo-info answer as a blob and returns the
// annotations for names resolved by it: the info's digest, and whether the
// repo is private or gated (fetched with someone's credentials: served only
// to clients the hub, or Clowder's rules, let in).
func (h *HF) infoAnnotations(ctx context.Context, info []byte) map[string]string {
	infoDesc, _ := h.storeJSON(ctx, info)
	ann := map[string]string{AnnotationHFInfo: string(infoDesc)}
	var access struct {
		Private bool `json:"private"`
		Gated   any  `json:"gated"`
	}
	_ = json.Unmarshal(info, &access)
	if g, ok := access.Gated.(bool); access.Private || (access.Gated != nil && !(ok && !g)) {
		ann[AnnotationPrivate] = "true"
	}
	return ann
}

// maxPending bounds the revision names waiting for their commit's view.
const maxPending = 1024

// noteRevision records what a live repo-info answer (the whole document,
// no query) says: rev is commit sha now. The revision is named at once when
// the commit's view is held, else as soon as it is built. A client that
// resolves revisions through the API and then asks for files by commit
// (a worker Clowder, snapshot_download) so leaves the revision name behind,
// and the revision resolves with the hub unreachable.
func (h *HF) noteRevision(ctx context.Context, repo hf.RepoRef, rev string, info []byte) {
	if rev == "" {
		rev = "main" // as Resolve reads an empty revision
	}
	tag := RevisionTag(rev)
	if tag == "" || IsCommit(rev) {
		return
	}
	var meta struct {
		ID  string `json:"id"`
		SHA string `json:"sha"`
	}
	if json.Unmarshal(info, &meta) != nil || !IsCommit(meta.SHA) {
		return
	}
	if meta.ID != "" && strings.EqualFold(meta.ID, repo.ID) {
		repo.ID = meta.ID
	}
	base := h.OCIName(repo)
	if !ValidName(base) {
		return
	}
	ann := h.infoAnnotations(ctx, info)
	if d, err := h.p.store.Resolve(ctx, base+":"+meta.SHA); err == nil {
		if v, err := h.loadView(ctx, repo, d); err == nil {
			_ = h.name(ctx, base+":"+tag, v, ann)
			return
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending == nil || len(h.pending) >= maxPending {
		h.pending = map[string]map[string]map[string]string{}
	}
	key := base + ":" + meta.SHA
	if h.pending[key] == nil {
		h.pending[key] = map[string]map[string]string{}
	}
	h.pending[key][tag] = ann
}

// namePending names the revisions noteRevision saw for commitName's view.
func (h *HF) namePending(ctx context.Context, commitName string, v *HFView) {
	h.mu.Lock()
	tags := h.pending[commitName]
	delete(h.pending, commitName)
	h.mu.Unlock()
	base, _, _ := strings.Cut(commitName, ":")
	for tag, ann := range tags {
		_ = h.name(ctx, base+":"+tag, v, ann)
	}
}

// storeJSON keeps a JSON document (Xet fields stripped) as a blob.
func (h *HF) storeJSON(ctx context.Context, b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	if _, err := cas.Ingest(ctx, h.p.store, ocispec.Descriptor{Digest: d, Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
		return "", err
	}
	return d, nil
}

func (h *HF) name(ctx context.Context, name string, v *HFView, extra map[string]string) error {
	now := h.p.opts.Now()
	ann := map[string]string{
		cas.AnnotationUpstream:  h.up.Name,
		cas.AnnotationConfirmed: now.UTC().Format(time.RFC3339Nano),
		AnnotationHFRepo:        v.Repo.ID,
		AnnotationHFType:        v.Repo.Type,
		AnnotationHFCommit:      v.Commit,
	}
	for k, val := range extra {
		if val != "" {
			ann[k] = val
		}
	}
	d := v.Desc
	d.Annotations = ann
	if err := cas.TagHeld(ctx, h.p.store, name, d, v.Manifest); err != nil {
		return err
	}
	h.mu.Lock()
	h.resolved[name] = now
	h.mu.Unlock()
	h.p.mu.Lock()
	h.p.confirmed[name] = now
	h.p.mu.Unlock()
	return nil
}

// build lists the commit's tree, fetches and verifies its regular files
// (LFS files are known by their sha256 and fetched when asked for) and
// writes the deterministic view manifest.
func (h *HF) build(ctx context.Context, repo hf.RepoRef, commit, auth string) (*HFView, error) {
	entries, err := h.client.Tree(ctx, repo, commit, auth)
	if err != nil {
		return nil, err
	}
	var files []HFFile
	for _, e := range entries {
		if e.Type != "file" {
			continue
		}
		if !safeRepoPath(e.Path) {
			return nil, &upstream.Error{Method: "GET", URL: repo.APIPrefix() + "/tree/" + commit, Status: 502, Message: fmt.Sprintf("unsafe path %q in tree", e.Path)}
		}
		f := HFFile{Path: e.Path, Size: e.Size, OID: e.OID}
		if e.LFS != nil {
			d := digest.NewDigestFromEncoded(digest.SHA256, e.LFS.OID)
			if cas.ValidateDigest(d) != nil {
				return nil, &upstream.Error{Method: "GET", URL: repo.APIPrefix(), Status: 502, Message: "bad LFS oid for " + e.Path}
			}
			f.Digest, f.Size, f.LFS = d, e.LFS.Size, true
		}
		files = append(files, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range files {
		if files[i].LFS {
			continue
		}
		g.Go(func() error {
			d, err := h.fetchRegular(gctx, repo, commit, files[i], auth)
			files[i].Digest = d
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	cfg, _ := json.Marshal(hfConfig{Type: repo.Type, Repo: repo.ID, Commit: commit, Files: files})
	cfgDesc := ocispec.Descriptor{MediaType: MediaTypeAimageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	if _, err := cas.Ingest(ctx, h.p.store, cfgDesc, bytes.NewReader(cfg)); err != nil {
		return nil, err
	}
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: MediaTypeAimageManifest,
		Config:       cfgDesc,
		Layers:       []ocispec.Descriptor{},
		Annotations: map[string]string{
			AnnotationHFRepo:                  repo.ID,
			AnnotationHFType:                  repo.Type,
			AnnotationHFCommit:                commit,
			ocispec.AnnotationRevision:        commit,
			ocispec.AnnotationSource:          h.client.Base().String() + repo.URLPrefix(),
			"org.opencontainers.image.vendor": "Hugging Face",
		},
	}
	m.SchemaVersion = 2
	for _, f := range files {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: LayerMediaType(f.Path), Digest: f.Digest, Size: f.Size,
			Annotations: map[string]string{ocispec.AnnotationTitle: f.Path}})
	}
	mb, _ := json.Marshal(m)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: MediaTypeAimageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	if _, err := cas.Ingest(ctx, h.p.store, desc, bytes.NewReader(mb)); err != nil {
		return nil, err
	}
	return &HFView{Repo: repo, Commit: commit, Files: files, Manifest: mb, Desc: desc}, nil
}

// safeRepoPath refuses paths that could leave a checkout directory (or
// reshape a hub URL): see hf.ValidPath.
func safeRepoPath(p string) bool { return hf.ValidPath(p) }

// GitBlobSHA1 is git's object id of content: sha1("blob <size>\x00" + content).
func GitBlobSHA1(b []byte) string {
	h := sha1.New()
	h.Write([]byte("blob " + strconv.Itoa(len(b)) + "\x00"))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// fetchRegular downloads a regular (non-LFS) file, checks it against the git
// sha1 the tree announced, and stores it by sha256.
func (h *HF) fetchRegular(ctx context.Context, repo hf.RepoRef, commit string, f HFFile, auth string) (digest.Digest, error) {
	body, _, _, err := h.client.Open(ctx, repo, commit, f.Path, 0, auth)
	if err != nil {
		return "", err
	}
	defer body.Close()
	b, err := upstream.ReadCapped(body, maxRegularFile)
	if err != nil {
		return "", fmt.Errorf("%s/%s: %w", repo, f.Path, err)
	}
	if int64(len(b)) != f.Size {
		return "", fmt.Errorf("%s/%s: got %d bytes, tree says %d: %w", repo, f.Path, len(b), f.Size, cas.ErrSizeMismatch)
	}
	if f.OID != "" && GitBlobSHA1(b) != f.OID {
		return "", fmt.Errorf("%s/%s: git sha1 %s, tree says %s: %w", repo, f.Path, GitBlobSHA1(b), f.OID, upstream.ErrDigestMismatch)
	}
	d := digest.FromBytes(b)
	if _, err := cas.Ingest(ctx, h.p.store, ocispec.Descriptor{Digest: d, Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
		return "", err
	}
	return d, nil
}

// loadView reads a view from its manifest and config blobs.
func (h *HF) loadView(ctx context.Context, repo hf.RepoRef, d ocispec.Descriptor) (*HFView, error) {
	mb, err := cas.ReadAll(ctx, h.p.store, d.Digest, 64<<20)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil || m.Config.MediaType != MediaTypeAimageConfig {
		return nil, fmt.Errorf("%s is not a Hugging Face view", d.Digest)
	}
	cb, err := cas.ReadAll(ctx, h.p.store, m.Config.Digest, 256<<20)
	if err != nil {
		return nil, err
	}
	var cfg hfConfig
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, err
	}
	if cfg.Repo != "" {
		repo = hf.RepoRef{Type: cfg.Type, ID: cfg.Repo}
	}
	v := &HFView{Repo: repo, Commit: cfg.Commit, Files: cfg.Files, Manifest: mb,
		Desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: MediaTypeAimageManifest, Digest: d.Digest, Size: int64(len(mb))}}
	if id := d.Annotations[AnnotationHFInfo]; id != "" {
		v.InfoDigest = digest.Digest(id)
	}
	v.Private = d.Annotations[AnnotationPrivate] == "true"
	return v, nil
}

// OpenFile returns a file of a view through the one fill path: LFS files are
// verified against their sha256, regular ones are held already.
func (h *HF) OpenFile(ctx context.Context, v *HFView, f HFFile, auth string) (*Blob, error) {
	repo, commit := v.Repo, v.Commit
	return h.p.BlobFrom(ctx, ocispec.Descriptor{Digest: f.Digest, Size: f.Size}, func(ctx context.Context, off int64) (io.ReadCloser, int64, int64, error) {
		return h.client.Open(ctx, repo, commit, f.Path, off, auth)
	})
}

// Info returns the repo-info JSON for rev (Xet fields stripped): live from
// the hub, else the copy cached at the last resolution, else one built from
// the view (id, sha, siblings).
func (h *HF) Info(ctx context.Context, repo hf.RepoRef, rev, rawQuery, auth string) ([]byte, error) {
	rctx, cancel := context.WithTimeout(ctx, h.p.opts.RevalidateTimeout)
	b, err := h.client.Info(rctx, repo, rev, rawQuery, auth)
	cancel()
	if err == nil {
		if rawQuery == "" {
			h.noteRevision(ctx, repo, rev, b)
		}
		return SanitizeHubJSON(b)
	}
	var he *hf.Error
	if errors.As(err, &he) && he.Up.Status < 500 && he.Up.Status != 429 {
		return nil, err // the hub's verdict: relay it, cache nothing
	}
	v, verr := h.cachedView(ctx, repo, rev)
	if verr != nil {
		return nil, err
	}
	if v.InfoDigest != "" {
		if b, err := cas.ReadAll(ctx, h.p.store, v.InfoDigest, 32<<20); err == nil {
			return SanitizeHubJSON(b)
		}
	}
	sib := []map[string]any{}
	for _, f := range v.Files {
		sib = append(sib, map[string]any{"rfilename": f.Path})
	}
	return json.Marshal(map[string]any{"id": v.Repo.ID, "modelId": v.Repo.ID, "sha": v.Commit, "siblings": sib, "private": false})
}

// cachedView is the last resolution of rev, without asking the hub.
func (h *HF) cachedView(ctx context.Context, repo hf.RepoRef, rev string) (*HFView, error) {
	if rev == "" {
		rev = "main"
	}
	tag := RevisionTag(rev)
	if tag == "" {
		return nil, ErrManifestUnknown
	}
	d, err := h.p.store.Resolve(ctx, h.OCIName(repo)+":"+tag)
	if err != nil {
		return nil, err
	}
	return h.loadView(ctx, repo, d)
}

// SanitizeHubJSON strips Xet fields from hub JSON. Documents nested deeper
// than upstream.MaxJSONDepth are refused.
func SanitizeHubJSON(b []byte) ([]byte, error) {
	if err := upstream.CheckJSONDepth(b, upstream.MaxJSONDepth); err != nil {
		return nil, &upstream.Error{Method: "GET", Status: 502, Message: "hub sent JSON " + err.Error()}
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, &upstream.Error{Method: "GET", Status: 502, Message: "hub sent invalid JSON"}
	}
	return json.Marshal(hf.StripXet(v))
}

// TreeFromView synthesizes a tree listing from a view (hub unreachable):
// entries under dir, recursively or one level deep.
func TreeFromView(v *HFView, dir string, recursive bool) []map[string]any {
	dir = strings.Trim(dir, "/")
	out := []map[string]any{}
	dirs := map[string]bool{}
	for _, f := range v.Files {
		rel := f.Path
		if dir != "" {
			if !strings.HasPrefix(f.Path, dir+"/") {
				continue
			}
			rel = strings.TrimPrefix(f.Path, dir+"/")
		}
		parts := strings.Split(rel, "/")
		for i := 1; i < len(parts); i++ {
			dp := strings.Join(parts[:i], "/")
			if dir != "" {
				dp = dir + "/" + dp
			}
			if !dirs[dp] && (recursive || i == 1) {
				dirs[dp] = true
				out = append(out, map[string]any{"type": "directory", "oid": "", "size": 0, "path": dp})
			}
		}
		if !recursive && len(parts) > 1 {
			continue
		}
		e := map[string]any{"type": "file", "oid": f.OID, "size": f.Size, "path": f.Path}
		if f.LFS {
			e["lfs"] = map[string]any{"oid": f.Digest.Encoded(), "size": f.Size}
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i]["path"].(string) < out[j]["path"].(string) })
	return out
}

// RepoFromOCI parses an OCI repository path under the upstream
// (org/repo, datasets/org/repo, spaces/org/repo).
func RepoFromOCI(p string) (hf.RepoRef, bool) {
	t := hf.Model
	for _, k := range []string{hf.Dataset, hf.Space} {
		if rest, ok := strings.CutPrefix(p, k+"s/"); ok {
			t, p = k, rest
		}
	}
	if p == "" || strings.Count(p, "/") > 1 {
		return hf.RepoRef{}, false
	}
	return hf.RepoRef{Type: t, ID: p}, true
}

// Source returns the OCI face of the hub: tags are revisions, manifests are
// views, blobs are repo files.
func (h *HF) Source() upstream.Source { return hfSource{h} }

type hfSource struct{ h *HF }

func (s hfSource) view(ctx context.Context, repo, ref string) (*HFView, error) {
	r, ok := RepoFromOCI(repo)
	if !ok {
		return nil, fmt.Errorf("%s: %w", repo, ErrInvalidName)
	}
	if IsDigest(ref) {
		return nil, fmt.Errorf("manifest %s of %s: %w", ref, repo, upstream.ErrNotFound)
	}
	return s.h.Resolve(ctx, r, TagRevision(ref), "")
}

func (s hfSource) Resolve(ctx context.Context, repo, ref string) (ocispec.Descriptor, error) {
	v, err := s.view(ctx, repo, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return v.Desc, nil
}

func (s hfSource) Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
	v, err := s.view(ctx, repo, ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return v.Desc, v.Manifest, nil
}

// Blob finds the file with digest d in the cached views of repo and
// downloads it from its commit.
func (s hfSource) Blob(ctx context.Context, repo string, d digest.Digest, off int64) (io.ReadCloser, int64, int64, error) {
	r, ok := RepoFromOCI(repo)
	if !ok {
		return nil, 0, 0, fmt.Errorf("%s: %w", repo, ErrInvalidName)
	}
	descs, err := s.h.p.store.List(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	base := s.h.OCIName(r)
	seen := map[digest.Digest]bool{}
	for _, x := range descs {
		ref := x.Annotations[cas.AnnotationRefName]
		if !strings.HasPrefix(ref, base+":") || seen[x.Digest] {
			continue
		}
		seen[x.Digest] = true
		v, err := s.h.loadView(ctx, r, x)
		if err != nil {
			continue
		}
		for _, f := range v.Files {
			if f.Digest == d {
				return s.h.client.Open(ctx, v.Repo, v.Commit, f.Path, off, "")
			}
		}
	}
	return nil, 0, 0, fmt.Errorf("blob %s in %s: %w", d, repo, upstream.ErrNotFound)
}

// lfsPointerSize is the size of a git-lfs pointer file for a blob of n bytes.
func lfsPointerSize(n int64) int64 {
	return int64(len("version https://git-lfs.github.com/spec/v1\noid sha256:") + 64 + len("\nsize ") + len(strconv.FormatInt(n, 10)) + 1)
}

// PathsInfoFromView answers paths-info from a view (hub unreachable): the
// listed files (and directories) that exist, in the hub's shape.
func PathsInfoFromView(v *HFView, paths []string) []map[string]any {
	out := []map[string]any{}
	for _, p := range paths {
		p = strings.Trim(p, "/")
		if f, ok := v.File(p); ok {
			e := map[string]any{"type": "file", "oid": f.OID, "size": f.Size, "path": f.Path}
			if f.LFS {
				e["lfs"] = map[string]any{"oid": f.Digest.Encoded(), "size": f.Size, "pointerSize": lfsPointerSize(f.Size)}
			}
			out = append(out, e)
			continue
		}
		for _, f := range v.Files {
			if strings.HasPrefix(f.Path, p+"/") {
				out = append(out, map[string]any{"type": "directory", "oid": "", "size": 0, "path": p})
				break
			}
		}
	}
	return out
}

// RepoPrivate reports whether any cached revision of repo is private or gated.
func (h *HF) RepoPrivate(ctx context.Context, repo hf.RepoRef) bool {
	descs, err := h.p.store.List(ctx)
	if err != nil {
		return true
	}
	base := h.OCIName(repo) + ":"
	for _, d := range descs {
		if strings.HasPrefix(d.Annotations[cas.AnnotationRefName], base) && d.Annotations[AnnotationPrivate] == "true" {
			return true
		}
	}
	return false
}

// CheckAccess asks the hub whether the client's own credential (auth) may
// read a file of a private or gated repo: a HEAD of its resolve URL, the
// answer cached for accessTTL.
func (h *HF) CheckAccess(ctx context.Context, v *HFView, file, auth string) bool {
	if auth == "" {
		return false
	}
	key := auth + "\n" + v.Repo.String()
	h.mu.Lock()
	if h.access == nil {
		h.access = map[string]accessEntry{}
	}
	e, ok := h.access[key]
	h.mu.Unlock()
	if ok && time.Since(e.at) < accessTTL {
		return e.ok
	}
	rctx, cancel := context.WithTimeout(ctx, h.p.opts.RevalidateTimeout)
	defer cancel()
	err := h.client.Head(rctx, v.Repo, v.Commit, file, auth)
	var he *hf.Error
	okAccess := err == nil
	if err != nil && !errors.As(err, &he) {
		return false // hub unreachable: no verdict, no caching
	}
	h.mu.Lock()
	h.access[key] = accessEntry{ok: okAccess, at: time.Now()}
	h.mu.Unlock()
	return okAccess
}

// accessTTL is how long the hub's answer on a client credential is trusted.
const accessTTL = 5 * time.Minute

type accessEntry struct {
	ok bool
	at time.Time
}
