package hosted

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/proxy"
)

// Errors returned by the Store, wrapped with the name or digest they concern.
// Invalid digests and names are cas's and proxy's sentinels.
var (
	ErrNameUnknown         = errors.New("repository name not known to registry")
	ErrBlobUnknown         = errors.New("blob unknown to repository")
	ErrManifestUnknown     = errors.New("manifest unknown to repository")
	ErrManifestInvalid     = errors.New("manifest invalid")
	ErrManifestBlobUnknown = errors.New("manifest references a manifest or blob unknown to the repository")
	ErrManifestTooLarge    = errors.New("manifest too large")
	ErrUploadUnknown       = errors.New("blob upload unknown")
	ErrUploadInvalid       = errors.New("blob upload invalid")
	// ErrRangeInvalid: a chunk that does not start where the upload ends.
	ErrRangeInvalid = errors.New("chunk out of order")
	// ErrDigestInvalid: the uploaded bytes do not have the digest the client gave.
	ErrDigestInvalid = errors.New("provided digest did not match uploaded content")
	// ErrSizeInvalid: the uploaded bytes do not have the length the client gave.
	ErrSizeInvalid = errors.New("provided length did not match content length")
	// ErrUploadTooLarge: a blob upload exceeds MaxUploadSize.
	ErrUploadTooLarge = errors.New("blob upload exceeds the size limit")
)

// MaxManifestSize is the largest manifest accepted (the spec asks registries
// to take at least 4 MB).
const MaxManifestSize = 4 << 20

// DefaultUploadTTL is how long an upload session may sit idle before it is
// removed.
const DefaultUploadTTL = 24 * time.Hour

const (
	hostedDir    = ".clowder/hosted"
	uploadsDir   = ".clowder/uploads"
	linksDir     = "_blobs"
	referrersDir = "_referrers"
)

// Store serves the hosted repositories of one layout.
type Store struct {
	cas     cas.Store
	prefix  string
	dir     string // ROOT/.clowder/hosted
	uploads string // ROOT/.clowder/uploads

	// UploadTTL bounds how long an idle upload session is kept.
	UploadTTL time.Duration
	// MaxUploadSize bounds one blob upload in bytes (0: unbounded). A
	// larger announced length is refused before any byte is read; a body
	// that grows past it is cut off and the upload refused.
	MaxUploadSize int64

	mu        sync.Mutex
	lastSweep time.Time
}

// Open returns the hosted repositories under prefix stored in s, whose
// layout lives at root. Upload sessions idle for longer than UploadTTL are
// removed.
func Open(s cas.Store, root, prefix string) (*Store, error) {
	if prefix == "" || strings.Contains(prefix, "/") || !proxy.ValidName(prefix) {
		return nil, fmt.Errorf("hosted prefix %q: %w", prefix, cas.ErrInvalidName)
	}
	h := &Store{
		cas:       s,
		prefix:    prefix,
		dir:       filepath.Join(root, filepath.FromSlash(hostedDir)),
		uploads:   filepath.Join(root, filepath.FromSlash(uploadsDir)),
		UploadTTL: DefaultUploadTTL,
	}
	for _, d := range []string{h.dir, h.uploads} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("hosted: %w", err)
		}
	}
	h.sweepUploads()
	return h, nil
}

// Prefix returns the first name segment of hosted repositories.
func (h *Store) Prefix() string { return h.prefix }

// Owns reports whether name is a hosted repository name: its first segment
// is the prefix.
func (h *Store) Owns(name string) bool {
	first, _, _ := strings.Cut(name, "/")
	return first == h.prefix
}

// checkRepo validates a repository name for hosted use.
func (h *Store) checkRepo(repo string) error {
	if !h.Owns(repo) {
		return fmt.Errorf("%q is not under the hosted prefix %q: %w", repo, h.prefix, proxy.ErrInvalidName)
	}
	// The spec limits names to fewer than 256 characters.
	if len(repo) > 255 || !proxy.ValidName(repo) {
		return fmt.Errorf("%q: %w", repo, proxy.ErrInvalidName)
	}
	return nil
}

func (h *Store) repoDir(repo string) string {
	return filepath.Join(h.dir, filepath.FromSlash(repo))
}

func (h *Store) linkPath(repo string, d digest.Digest) string {
	return filepath.Join(h.repoDir(repo), linksDir, d.Algorithm().String(), d.Encoded())
}

// Linked reports whether repo may read blob d (d must be valid).
func (h *Store) linked(repo string, d digest.Digest) bool {
	_, err := os.Stat(h.linkPath(repo, d))
	return err == nil
}

// link records that repo may read blob d.
func (h *Store) link(repo string, d digest.Digest) error {
	p := h.linkPath(repo, d)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("link %s into %s: %w", d, repo, err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("link %s into %s: %w", d, repo, err)
	}
	f.Close()
	syncDir(filepath.Dir(p))
	return nil
}

// repoKnown reports whether repo has any content: a linked blob or a name.
func (h *Store) repoKnown(ctx context.Context, repo string) bool {
	if fi, err := os.Stat(filepath.Join(h.repoDir(repo), linksDir)); err == nil && fi.IsDir() {
		return true
	}
	descs, err := h.cas.List(ctx)
	if err != nil {
		return false
	}
	for _, d := range descs {
		if r, _, ok := splitRef(d.Annotations[cas.AnnotationRefName]); ok && r == repo {
			return true
		}
	}
	return false
}

// splitRef splits "repo:tag" or "repo@digest" into repo and the reference.
func splitRef(name string) (repo, ref string, ok bool) {
	if i := strings.LastIndex(name, "@"); i > 0 {
		return name[:i], name[i+1:], true
	}
	if i := strings.LastIndex(name, ":"); i > 0 && i > strings.LastIndex(name, "/") {
		return name[:i], name[i+1:], true
	}
	return "", "", false
}

// Repositories returns every hosted repository with a name or a linked
// blob, sorted.
func (h *Store) Repositories(ctx context.Context) ([]string, error) {
	set := map[string]bool{}
	descs, err := h.cas.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range descs {
		if r, _, ok := splitRef(d.Annotations[cas.AnnotationRefName]); ok && h.Owns(r) {
			set[r] = true
		}
	}
	err = h.walkRepos(func(repo, dir string) bool {
		set[repo] = true
		return true
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

// walkRepos calls fn for every repository folder that has linked blobs,
// until fn returns false.
func (h *Store) walkRepos(fn func(repo, dir string) bool) error {
	stop := errors.New("stop")
	err := filepath.WalkDir(h.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !e.IsDir() {
			return nil
		}
		switch e.Name() {
		case linksDir:
			repo, rerr := filepath.Rel(h.dir, filepath.Dir(p))
			if rerr != nil {
				return rerr
			}
			if !fn(filepath.ToSlash(repo), filepath.Dir(p)) {
				return stop
			}
			return fs.SkipDir
		case referrersDir:
			return fs.SkipDir
		}
		return nil
	})
	if errors.Is(err, stop) {
		return nil
	}
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
