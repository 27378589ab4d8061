package proxy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/upstream"
)

// Private upstream content: what the proxy fetched with its own upstream
// credentials and the upstream does not give anonymously (a private Docker
// Hub repository) is marked dev.clowder.private in index.json. Such a
// repository is served only to clients Clowder's rules let in, and its
// blobs and manifests are not handed out by digest through another
// repository's route unless that route's upstream confirms it has them.

// publicChecker is a Source that can tell whether content is public.
type publicChecker interface {
	PublicAccess(ctx context.Context, repo, ref string) bool
}

// blobChecker is a Source that can confirm it holds a blob.
type blobChecker interface {
	BlobExists(ctx context.Context, repo string, d digest.Digest) error
}

// AnnotationPrivate marks names whose content needs credentials upstream.
// (Defined with the Hugging Face annotations.)

func repoOfName(name string) string {
	if i := strings.LastIndex(name, "@"); i >= 0 {
		return name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		return name[:i]
	}
	return name
}

type privIndex struct {
	at      time.Time
	repos   map[string]bool
	digests map[digest.Digest]map[string]bool // digest -> private repos that reference it
}

// privacy returns the private repositories and the digests they reference
// (rebuilt at most every few seconds; private names are few).
func (p *Proxy) privacy(ctx context.Context) *privIndex {
	p.mu.Lock()
	pi := p.priv
	p.mu.Unlock()
	if pi != nil && time.Since(pi.at) < 3*time.Second {
		return pi
	}
	pi = &privIndex{at: time.Now(), repos: map[string]bool{}, digests: map[digest.Digest]map[string]bool{}}
	descs, err := p.store.List(ctx)
	if err == nil {
		for _, d := range descs {
			if d.Annotations[AnnotationPrivate] != "true" {
				continue
			}
			repo := repoOfName(d.Annotations[cas.AnnotationRefName])
			pi.repos[repo] = true
			_ = cas.Walk(ctx, p.store, d, func(x ocispec.Descriptor, _ bool) error {
				if pi.digests[x.Digest] == nil {
					pi.digests[x.Digest] = map[string]bool{}
				}
				pi.digests[x.Digest][repo] = true
				return nil
			})
		}
	}
	p.mu.Lock()
	p.priv = pi
	p.mu.Unlock()
	return pi
}

func (p *Proxy) forgetPrivacy() {
	p.mu.Lock()
	p.priv = nil
	p.mu.Unlock()
}

// PrivateRepo reports whether name (a full repository name) holds content
// marked private.
func (p *Proxy) PrivateRepo(ctx context.Context, name string) bool {
	return p.privacy(ctx).repos[name]
}

// CheckDigestRoute refuses (as unknown) a digest that only private
// repositories reference, asked for through another repository, unless
// that route's upstream confirms it holds it.
func (p *Proxy) CheckDigestRoute(ctx context.Context, rt upstream.Route, d digest.Digest, manifest bool) error {
	repos := p.privacy(ctx).digests[d]
	if len(repos) == 0 || repos[rt.Name] {
		return nil
	}
	kind := ErrBlobUnknown
	if manifest {
		kind = ErrManifestUnknown
	}
	rctx, cancel := context.WithTimeout(ctx, p.opts.RevalidateTimeout)
	defer cancel()
	var err error
	switch src := rt.Upstream.Source.(type) {
	case blobChecker:
		if manifest {
			_, err = rt.Upstream.Source.Resolve(rctx, rt.Repo, d.String())
		} else {
			err = src.BlobExists(rctx, rt.Repo, d)
		}
	default:
		err = fmt.Errorf("cannot confirm")
	}
	if err != nil {
		return fmt.Errorf("%s in %s: %w", d, rt.Name, kind)
	}
	return nil
}

// markPrivate annotates a freshly fetched name when its upstream does not
// give it without the proxy's credentials.
func (p *Proxy) privateAnnotation(ctx context.Context, rt upstream.Route, ref string) map[string]string {
	pc, ok := rt.Upstream.Source.(publicChecker)
	if !ok || !p.opts.MarkPrivate {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, p.opts.RevalidateTimeout)
	defer cancel()
	if pc.PublicAccess(rctx, rt.Repo, ref) {
		return nil
	}
	p.forgetPrivacy()
	return map[string]string{AnnotationPrivate: "true"}
}
