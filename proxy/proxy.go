package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/upstream"
	"github.com/clowder-dev/clowder/upstream/oci"
)

// Errors for bad client input.
var (
	ErrInvalidTag      = errors.New("invalid tag")
	ErrInvalidName     = errors.New("invalid repository name")
	ErrManifestUnknown = errors.New("manifest unknown")
	ErrBlobUnknown     = errors.New("blob unknown")
	// ErrNoSource means the routed upstream does not serve this API.
	ErrNoSource = errors.New("this upstream does not serve the OCI API")
	// ErrTooManyFills means the client already started MaxFillsPerClient
	// fills that are still running.
	ErrTooManyFills = errors.New("too many uncached blobs requested at once by this client")
)

var (
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
)

// ValidName reports whether s is a valid OCI repository name.
func ValidName(s string) bool { return len(s) <= 4096 && nameRE.MatchString(s) }

// ValidTag reports whether s is a valid tag.
func ValidTag(s string) bool { return tagRE.MatchString(s) }

// Options tune a Proxy.
type Options struct {
	// RevalidateTimeout bounds the wait for the upstream when a cached copy
	// could be served instead.
	RevalidateTimeout time.Duration
	// UpstreamTimeout bounds manifest and metadata requests for cold objects.
	UpstreamTimeout time.Duration
	// FarRange is how far past a running fill's write point a range must
	// start to be served by a ranged upstream request of its own ...
	FarRange int64
	// FarWait ... and how long the fill would take to get there at its
	// rate so far. Nearer ranges wait for the fill (one upstream fetch);
	// this keeps far ones flowing on slow links (ollama retries a part
	// that gets no byte for 30 s).
	FarWait time.Duration
	// MarkPrivate probes, for each name fetched with the proxy's own
	// upstream credentials, whether the upstream gives it anonymously, and
	// marks it private when not (client authentication on).
	MarkPrivate bool
	// Now returns the time (tests).
	Now func() time.Time
	// MaxFillsPerClient bounds the running fills one client (WithClient)
	// may have started; past it a cold blob is ErrTooManyFills. Joining a
	// running fill or reading a held blob is never refused. 0: unbounded.
	MaxFillsPerClient int
	// RequestTimeout bounds a whole non-blob request (manifests, tags,
	// referrers, the Hugging Face API); the server applies it. Blob streams
	// are bounded by the fill idle timeout instead. 0: none.
	RequestTimeout time.Duration
}

// Proxy is the pull-through cache: names and blobs come from the store when
// held and fresh, else from the routed upstream through the one filler.
type Proxy struct {
	store  cas.Store
	filler *cas.Filler
	router *upstream.Router
	opts   Options

	sf singleflight.Group

	mu        sync.Mutex
	confirmed map[string]time.Time
	hf        *HF
	priv      *privIndex
	used      map[string]time.Time // names served since the last TakeUsed
	fills     map[string]int       // running fills per client (MaxFillsPerClient)
}

type clientKey struct{}

// WithClient marks ctx as a request of client (its IP address), whose fills
// MaxFillsPerClient counts.
func WithClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

// RequestTimeout is the bound on a whole non-blob request (0: none).
func (p *Proxy) RequestTimeout() time.Duration { return p.opts.RequestTimeout }

// admitFill counts a fill of d about to be started for ctx's client. It
// returns ErrTooManyFills when the client is at its cap, else a function to
// call with the fill, which releases the count when the fill ends.
func (p *Proxy) admitFill(ctx context.Context, d digest.Digest) (func(*cas.Fill), error) {
	client, _ := ctx.Value(clientKey{}).(string)
	max := p.opts.MaxFillsPerClient
	if max <= 0 || client == "" || p.filler.Lookup(d) != nil {
		return func(*cas.Fill) {}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fills[client] >= max {
		return nil, fmt.Errorf("%d fills already running for %s: %w", max, client, ErrTooManyFills)
	}
	if p.fills == nil {
		p.fills = map[string]int{}
	}
	p.fills[client]++
	return func(fl *cas.Fill) {
		go func() {
			<-fl.Done()
			p.mu.Lock()
			if p.fills[client]--; p.fills[client] <= 0 {
				delete(p.fills, client)
			}
			p.mu.Unlock()
		}()
	}, nil
}

// touch records that a name was served.
func (p *Proxy) touch(name string) {
	p.mu.Lock()
	if p.used == nil {
		p.used = map[string]time.Time{}
	}
	p.used[name] = p.opts.Now()
	p.mu.Unlock()
}

// TakeUsed returns and forgets the names served since the last call, with
// when (the janitor writes them to index.json as last-use times).
func (p *Proxy) TakeUsed() map[string]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.used
	p.used = nil
	return u
}

// SetHF registers the Hugging Face front (the first huggingface upstream).
func (p *Proxy) SetHF(h *HF) {
	if p.hf == nil {
		p.hf = h
	}
}

// HF returns the Hugging Face front, or nil.
func (p *Proxy) HF() *HF { return p.hf }

// New returns a Proxy.
func New(store cas.Store, filler *cas.Filler, router *upstream.Router, opts Options) *Proxy {
	if opts.RevalidateTimeout == 0 {
		opts.RevalidateTimeout = 5 * time.Second
	}
	if opts.UpstreamTimeout == 0 {
		opts.UpstreamTimeout = 5 * time.Minute
	}
	if opts.FarRange == 0 {
		opts.FarRange = 16 << 20
	}
	if opts.FarWait == 0 {
		opts.FarWait = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Proxy{store: store, filler: filler, router: router, opts: opts, confirmed: map[string]time.Time{}}
}

// Router returns the proxy's router.
func (p *Proxy) Router() *upstream.Router { return p.router }

// Store returns the proxy's store.
func (p *Proxy) Store() cas.Store { return p.store }

// Filler returns the proxy's filler.
func (p *Proxy) Filler() *cas.Filler { return p.filler }

// Manifest is a manifest answer.
type Manifest struct {
	Desc ocispec.Descriptor
	Body []byte
	// Hit is true when served from the cache without fetching it.
	Hit bool
	// Stale is true when the upstream could not confirm a cached tag.
	Stale bool
}

// IsDigest reports whether ref looks like a digest rather than a tag.
func IsDigest(ref string) bool { return strings.Contains(ref, ":") }

// GetManifest returns the manifest ref (tag or digest) of the routed repository.
func (p *Proxy) GetManifest(ctx context.Context, rt upstream.Route, ref string) (Manifest, error) {
	if IsDigest(ref) {
		d := digest.Digest(ref)
		if err := cas.ValidateDigest(d); err != nil {
			return Manifest{}, err
		}
		m, err := p.manifestByDigest(ctx, rt, d)
		if err == nil {
			p.touch(rt.Name + "@" + string(d))
		}
		return m, err
	}
	if !ValidTag(ref) {
		return Manifest{}, fmt.Errorf("%q: %w", ref, ErrInvalidTag)
	}
	m, err := p.manifestByTag(ctx, rt, ref)
	if err == nil {
		p.touch(rt.Name + ":" + ref)
	}
	return m, err
}

func (p *Proxy) manifestByDigest(ctx context.Context, rt upstream.Route, d digest.Digest) (Manifest, error) {
	if m, err := p.cachedManifest(ctx, d, ""); err == nil {
		m.Hit = true
		return m, nil
	}
	v, err := p.flight(ctx, "m:"+string(d), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.UpstreamTimeout)
		defer cancel()
		desc, body, err := rt.Upstream.Source.Manifest(ctx, rt.Repo, string(d))
		if err != nil {
			return nil, err
		}
		if err := p.storeManifest(ctx, rt.Name+"@"+string(d), rt, desc, body); err != nil {
			return nil, err
		}
		return Manifest{Desc: desc, Body: body}, nil
	})
	if err != nil {
		return Manifest{}, mapNotFound(err, ErrManifestUnknown)
	}
	return v.(Manifest), nil
}

// flight runs fn once per key for all concurrent callers (singleflight).
// A caller whose ctx ends stops waiting (its request timed out or went
// away); fn runs on for the others and the cache.
func (p *Proxy) flight(ctx context.Context, key string, fn func() (any, error)) (any, error) {
	ch := p.sf.DoChan(key, func() (v any, err error) {
		// DoChan would re-panic on a goroutine of its own, out of reach of
		// net/http's per-request recovery.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%s: panic: %v", key, r)
			}
		}()
		return fn()
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// cachedManifest reads a held manifest. mediaType, when known from a
// descriptor, wins; else the media type recorded at fill time in index.json;
// else the body's own.
func (p *Proxy) cachedManifest(ctx context.Context, d digest.Digest, mediaType string) (Manifest, error) {
	body, err := cas.ReadAll(ctx, p.store, d, oci.MaxManifestSize)
	if err != nil {
		return Manifest{}, err
	}
	if mediaType == "" {
		// The body's own mediaType is what fill time recorded (MediaTypeOf
		// prefers it), so the index.json scan is only for bodies without
		// one (schema 1 and other oddities served with a Content-Type).
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(body, &probe) == nil && probe.MediaType != "" {
			mediaType = probe.MediaType
		} else if mediaType = p.recordedMediaType(ctx, d); mediaType == "" {
			mediaType = oci.MediaTypeOf(body, "")
		}
	}
	return Manifest{Desc: ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(body))}, Body: body}, nil
}

func (p *Proxy) recordedMediaType(ctx context.Context, d digest.Digest) string {
	descs, err := p.store.List(ctx)
	if err != nil {
		return ""
	}
	for _, x := range descs {
		if x.Digest == d && x.MediaType != "" {
			return x.MediaType
		}
	}
	return ""
}

func (p *Proxy) manifestByTag(ctx context.Context, rt upstream.Route, tag string) (Manifest, error) {
	name := rt.Name + ":" + tag
	cached, cerr := p.store.Resolve(ctx, name)
	if cerr == nil {
		if p.fresh(name, cached, rt.Upstream.TTL()) {
			if m, err := p.cachedManifest(ctx, cached.Digest, cached.MediaType); err == nil {
				m.Hit = true
				return m, nil
			}
		}
		// Revalidate with a bounded wait; serve the cached copy if the
		// upstream cannot answer.
		v, err := p.flight(ctx, "t:"+name, func() (any, error) {
			return p.revalidate(ctx, rt, tag, name, cached)
		})
		if err == nil {
			return v.(Manifest), nil
		}
		if errors.Is(err, upstream.ErrNotFound) {
			return Manifest{}, mapNotFound(err, ErrManifestUnknown)
		}
		m, merr := p.cachedManifest(ctx, cached.Digest, cached.MediaType)
		if merr != nil {
			return Manifest{}, err
		}
		m.Hit, m.Stale = true, true
		return m, nil
	}
	v, err := p.flight(ctx, "t:"+name, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.UpstreamTimeout)
		defer cancel()
		desc, body, err := rt.Upstream.Source.Manifest(ctx, rt.Repo, tag)
		if err != nil {
			return nil, err
		}
		if err := p.storeManifest(ctx, name, rt, desc, body); err != nil {
			return nil, err
		}
		return Manifest{Desc: desc, Body: body}, nil
	})
	if err != nil {
		return Manifest{}, mapNotFound(err, ErrManifestUnknown)
	}
	return v.(Manifest), nil
}

func (p *Proxy) revalidate(ctx context.Context, rt upstream.Route, tag, name string, cached ocispec.Descriptor) (Manifest, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.RevalidateTimeout)
	defer cancel()
	desc, err := rt.Upstream.Source.Resolve(rctx, rt.Repo, tag)
	if err != nil {
		return Manifest{}, err
	}
	if desc.Digest == cached.Digest {
		if m, err := p.cachedManifest(ctx, cached.Digest, cached.MediaType); err == nil {
			p.confirm(ctx, name, cached)
			m.Hit = true
			return m, nil
		}
	}
	// The tag moved (or the cached bytes are gone): fetch the new manifest
	// by digest, which also verifies it.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.UpstreamTimeout)
	defer fcancel()
	ref := string(desc.Digest)
	if p.held(ctx, desc.Digest) {
		m, err := p.cachedManifest(ctx, desc.Digest, desc.MediaType)
		if err == nil {
			if err := p.tag(ctx, name, rt, m.Desc, m.Body, p.privateAnnotation(ctx, rt, tag)); err != nil {
				return Manifest{}, err
			}
			return m, nil
		}
	}
	mdesc, body, err := rt.Upstream.Source.Manifest(fctx, rt.Repo, ref)
	if err != nil {
		return Manifest{}, err
	}
	if err := p.storeManifest(ctx, name, rt, mdesc, body); err != nil {
		return Manifest{}, err
	}
	return Manifest{Desc: mdesc, Body: body}, nil
}

func (p *Proxy) held(ctx context.Context, d digest.Digest) bool { return cas.Exists(ctx, p.store, d) }

// fresh reports whether a cached tag was confirmed within ttl.
func (p *Proxy) fresh(name string, d ocispec.Descriptor, ttl time.Duration) bool {
	if ttl <= 0 {
		return false
	}
	p.mu.Lock()
	t, ok := p.confirmed[name]
	p.mu.Unlock()
	if !ok {
		var err error
		t, err = time.Parse(time.RFC3339Nano, d.Annotations[cas.AnnotationConfirmed])
		if err != nil {
			return false
		}
	}
	return p.opts.Now().Sub(t) < ttl
}

// confirm records that the upstream confirmed a tag now. It persists the
// time in index.json at most once a minute per name.
func (p *Proxy) confirm(ctx context.Context, name string, d ocispec.Descriptor) {
	now := p.opts.Now()
	p.mu.Lock()
	p.confirmed[name] = now
	p.mu.Unlock()
	if t, err := time.Parse(time.RFC3339Nano, d.Annotations[cas.AnnotationConfirmed]); err == nil && now.Sub(t) < time.Minute {
		return
	}
	d.Annotations = cloneMap(d.Annotations)
	d.Annotations[cas.AnnotationConfirmed] = now.UTC().Format(time.RFC3339Nano)
	_ = p.store.Tag(ctx, name, d)
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// storeManifest ingests a verified manifest and names it. A name that
// cannot be written (index.json unwritable, a shared bucket unreachable)
// does not fail the client: the verified bytes are answered, and the next
// request for the name asks the upstream again.
func (p *Proxy) storeManifest(ctx context.Context, name string, rt upstream.Route, desc ocispec.Descriptor, body []byte) error {
	if _, err := cas.Ingest(ctx, p.store, ocispec.Descriptor{Digest: desc.Digest, Size: int64(len(body))}, strings.NewReader(string(body))); err != nil {
		return err
	}
	ref := name[len(rt.Name)+1:]
	if err := p.tag(ctx, name, rt, desc, body, p.privateAnnotation(ctx, rt, ref)); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("name", name).Str("digest", desc.Digest.String()).Msg("manifest served but not named (the store refused the name)")
	}
	return nil
}

// tag names desc (whose bytes are body) as fetched from rt now.
func (p *Proxy) tag(ctx context.Context, name string, rt upstream.Route, desc ocispec.Descriptor, body []byte, extra ...map[string]string) error {
	now := p.opts.Now()
	d := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size, Annotations: map[string]string{
		cas.AnnotationUpstream:  rt.Upstream.Name,
		cas.AnnotationConfirmed: now.UTC().Format(time.RFC3339Nano),
	}}
	for _, e := range extra {
		for k, v := range e {
			d.Annotations[k] = v
		}
	}
	if err := cas.TagHeld(ctx, p.store, name, d, body); err != nil {
		return err
	}
	p.mu.Lock()
	p.confirmed[name] = now
	p.mu.Unlock()
	return nil
}

// Blob is a blob answer: its size and a way to read any range of it, from the
// store or following a fill.
type Blob struct {
	Digest digest.Digest
	// Size is -1 when the upstream did not announce it (stream without a length).
	Size int64
	// Hit is true when the blob was already held.
	Hit bool
	// File is the committed blob when Hit (zero-copy serving); nil otherwise.
	File cas.Blob
	open func(ctx context.Context, off, n int64) (io.ReadCloser, error)
	fill *cas.Fill
}

// Wait waits until the blob is committed to the store (a client may have
// every verified byte a moment before that).
func (b *Blob) Wait(ctx context.Context) error {
	if b.fill == nil {
		return nil
	}
	_, err := b.fill.Wait(ctx)
	return err
}

// Open returns a reader of [off, off+n); n < 0 reads to the end.
func (b *Blob) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return b.open(ctx, off, n)
}

// Close releases the blob's file, if any.
func (b *Blob) Close() error {
	if b.File != nil {
		return b.File.Close()
	}
	return nil
}

// GetBlob returns a held blob, or joins or starts its fill from the routed
// upstream. A blob by digest never goes upstream once held.
func (p *Proxy) GetBlob(ctx context.Context, rt upstream.Route, d digest.Digest) (*Blob, error) {
	src := rt.Upstream.Source
	if src == nil {
		return nil, fmt.Errorf("%s: %w", rt.Name, ErrNoSource)
	}
	return p.BlobFrom(ctx, ocispec.Descriptor{Digest: d, Size: -1}, func(ctx context.Context, off int64) (io.ReadCloser, int64, int64, error) {
		return src.Blob(ctx, rt.Repo, d, off)
	})
}

// BlobFrom is the one fill path every protocol shares: the held blob, else
// the running fill of desc.Digest, else a new fill from fetch. desc.Size is
// -1 when unknown.
func (p *Proxy) BlobFrom(ctx context.Context, desc ocispec.Descriptor, fetch cas.FetchFunc) (*Blob, error) {
	d := desc.Digest
	if err := cas.ValidateDigest(d); err != nil {
		return nil, err
	}
	if f, err := p.store.Open(ctx, d); err == nil {
		return &Blob{Digest: d, Size: f.Size(), Hit: true, File: f, open: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			if ro, ok := f.(rangeOpener); ok {
				// A remote blob (the s3 backend): one ranged GET per span.
				return ro.OpenRange(ctx, off, n)
			}
			return sectionReader(f, off, n, f.Size()), nil
		}}, nil
	}
	admitted, err := p.admitFill(ctx, d)
	if err != nil {
		return nil, err
	}
	fl := p.filler.Start(desc, fetch)
	admitted(fl)
	size, err := fl.Ready(ctx)
	if err != nil {
		return nil, mapNotFound(err, ErrBlobUnknown)
	}
	if size < 0 {
		// The upstream announced no length: wait for the verified blob so
		// the client gets a Content-Length and exact ranges.
		if _, err := fl.Wait(ctx); err != nil {
			return nil, mapNotFound(err, ErrBlobUnknown)
		}
		return p.BlobFrom(ctx, desc, fetch)
	}
	return &Blob{Digest: d, Size: size, fill: fl, open: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		// A range far past the write point is served by its own ranged
		// upstream request instead of waiting for the fill to get there.
		if off > 0 && off-fl.Written() > p.opts.FarRange {
			if eta, ok := fl.ETA(off, 500*time.Millisecond); ok && eta > p.opts.FarWait {
				if r, err := directRange(ctx, fetch, off, n); err == nil {
					return r, nil
				}
			}
		}
		r, err := fl.NewReader(ctx, off, n)
		if cas.ErrFillGone(err) {
			f, err := p.store.Open(ctx, d)
			if err != nil {
				return nil, err
			}
			return readCloser{sectionReader(f, off, n, f.Size()), f}, nil
		}
		return r, err
	}}, nil
}

// rangeOpener is a committed blob that is cheaper to read a span of with
// one stream than by ReadAt calls (a blob in an S3 bucket).
type rangeOpener interface {
	OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// FleetBlob serves another replica of a shared store (see cas/s3store): the
// running fill of d from off, else the held blob; it never starts a fill.
// total is -1 while the upstream has not said. ErrBlobUnknown when neither.
func (p *Proxy) FleetBlob(ctx context.Context, d digest.Digest, off int64) (body io.ReadCloser, total int64, err error) {
	if err := cas.ValidateDigest(d); err != nil {
		return nil, 0, err
	}
	if fl := p.filler.Lookup(d); fl != nil {
		size, err := fl.Ready(ctx)
		if err != nil {
			return nil, 0, mapNotFound(err, ErrBlobUnknown)
		}
		r, err := fl.NewReader(ctx, off, -1)
		if err == nil {
			return r, size, nil
		}
		if !cas.ErrFillGone(err) {
			return nil, 0, err
		}
	}
	f, err := p.store.Open(ctx, d)
	if err != nil {
		if errors.Is(err, cas.ErrNotFound) {
			return nil, 0, fmt.Errorf("%w: no fill of %s here", ErrBlobUnknown, d)
		}
		return nil, 0, err
	}
	if off > f.Size() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: offset %d past %d bytes", ErrBlobUnknown, off, f.Size())
	}
	if ro, ok := f.(rangeOpener); ok {
		r, err := ro.OpenRange(ctx, off, -1)
		f.Close()
		return r, f.Size(), err
	}
	return readCloser{io.NewSectionReader(f, off, f.Size()-off), f}, f.Size(), nil
}

// directRange reads [off, off+n) straight from the upstream, not stored.
func directRange(ctx context.Context, fetch cas.FetchFunc, off, n int64) (io.ReadCloser, error) {
	body, start, _, err := fetch(ctx, off)
	if err != nil {
		return nil, err
	}
	if start != off {
		body.Close()
		return nil, errors.New("upstream ignored the range")
	}
	if n < 0 {
		return body, nil
	}
	return readCloser{io.LimitReader(body, n), body}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

func sectionReader(r io.ReaderAt, off, n, size int64) io.ReadCloser {
	if n < 0 {
		n = size - off
	}
	return io.NopCloser(io.NewSectionReader(r, off, n))
}

// mapNotFound turns an upstream 404 into the proxy's sentinel for the kind
// of object, keeping the upstream error's text.
func mapNotFound(err error, kind error) error {
	if errors.Is(err, upstream.ErrNotFound) {
		return fmt.Errorf("%w: %v", kind, err)
	}
	return err
}

// Tags lists the tags of the routed repository: the upstream's answer when it
// gives one, else the cached names, paginated with n and last.
func (p *Proxy) Tags(ctx context.Context, rt upstream.Route, n int, last string) (tags []string, more bool, err error) {
	if l, ok := rt.Upstream.Source.(upstream.Lister); ok {
		rctx, cancel := context.WithTimeout(ctx, p.opts.RevalidateTimeout)
		all, uerr := p.upstreamTags(rctx, l, rt.Repo)
		cancel()
		if uerr == nil {
			t, m := paginate(all, n, last)
			return t, m, nil
		}
		err = uerr
	}
	cached, cerr := p.cachedTags(ctx, rt.Name)
	if cerr != nil || (len(cached) == 0 && err != nil) {
		if err == nil {
			err = cerr
		}
		return nil, false, mapNotFound(err, ErrManifestUnknown)
	}
	t, m := paginate(cached, n, last)
	return t, m, nil
}

// upstreamTags reads every page of the upstream's tag list (bounded).
func (p *Proxy) upstreamTags(ctx context.Context, l upstream.Lister, repo string) ([]string, error) {
	var all []string
	q := ""
	for range 100 {
		tags, next, err := l.Tags(ctx, repo, q)
		if err != nil {
			return nil, err
		}
		all = append(all, tags...)
		if next == "" || next == q {
			break
		}
		q = next
	}
	sort.Strings(all)
	return all, nil
}

func (p *Proxy) cachedTags(ctx context.Context, name string) ([]string, error) {
	descs, err := p.store.List(ctx)
	if err != nil {
		return nil, err
	}
	var tags []string
	prefix := name + ":"
	for _, d := range descs {
		ref := d.Annotations[cas.AnnotationRefName]
		if t, ok := strings.CutPrefix(ref, prefix); ok && ValidTag(t) {
			tags = append(tags, t)
		}
	}
	sort.Strings(tags)
	return tags, nil
}

func paginate(all []string, n int, last string) ([]string, bool) {
	out := all
	if last != "" {
		i := sort.SearchStrings(all, last)
		for i < len(all) && all[i] <= last {
			i++
		}
		out = all[i:]
	}
	if n >= 0 && len(out) > n {
		return out[:n], true
	}
	return out, false
}

// Referrers returns the referrers index of a digest: the upstream's when it
// answers, else one built from cached manifests of the repository.
func (p *Proxy) Referrers(ctx context.Context, rt upstream.Route, d digest.Digest, artifactType string) (ocispec.Index, error) {
	if err := cas.ValidateDigest(d); err != nil {
		return ocispec.Index{}, err
	}
	if l, ok := rt.Upstream.Source.(upstream.ReferrersLister); ok {
		rctx, cancel := context.WithTimeout(ctx, p.opts.RevalidateTimeout)
		idx, err := l.Referrers(rctx, rt.Repo, d, artifactType)
		cancel()
		if err == nil {
			return idx, nil
		}
	}
	// The upstream has no referrers API (or cannot be reached): answer
	// from the referrers tag schema (tag sha256-<hex>, fetched and cached
	// like any tag) plus the cached manifests whose subject is d. Clowder
	// always supports the API, so a client never has to fall back itself
	// (oras refuses an API that answers 200 for one digest and 404 for the
	// next).
	idx, err := p.cachedReferrers(ctx, rt.Name, d, artifactType)
	if err != nil {
		return idx, err
	}
	seen := map[digest.Digest]bool{}
	for _, m := range idx.Manifests {
		seen[m.Digest] = true
	}
	if m, err := p.GetManifest(ctx, rt, d.Algorithm().String()+"-"+d.Encoded()); err == nil {
		var tagIdx ocispec.Index
		if json.Unmarshal(m.Body, &tagIdx) == nil {
			for _, x := range tagIdx.Manifests {
				if seen[x.Digest] || (artifactType != "" && x.ArtifactType != artifactType) {
					continue
				}
				seen[x.Digest] = true
				idx.Manifests = append(idx.Manifests, x)
			}
		}
	}
	return idx, nil
}

func (p *Proxy) cachedReferrers(ctx context.Context, name string, d digest.Digest, artifactType string) (ocispec.Index, error) {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	idx.SchemaVersion = 2
	descs, err := p.store.List(ctx)
	if err != nil {
		return idx, err
	}
	seen := map[digest.Digest]bool{}
	for _, x := range descs {
		ref := x.Annotations[cas.AnnotationRefName]
		if !strings.HasPrefix(ref, name+":") && !strings.HasPrefix(ref, name+"@") {
			continue
		}
		if seen[x.Digest] {
			continue
		}
		seen[x.Digest] = true
		body, err := cas.ReadAll(ctx, p.store, x.Digest, oci.MaxManifestSize)
		if err != nil {
			continue
		}
		var m struct {
			MediaType    string              `json:"mediaType"`
			ArtifactType string              `json:"artifactType"`
			Config       ocispec.Descriptor  `json:"config"`
			Subject      *ocispec.Descriptor `json:"subject"`
			Annotations  map[string]string   `json:"annotations"`
		}
		if json.Unmarshal(body, &m) != nil || m.Subject == nil || m.Subject.Digest != d {
			continue
		}
		at := m.ArtifactType
		if at == "" {
			at = m.Config.MediaType
		}
		if artifactType != "" && at != artifactType {
			continue
		}
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: x.MediaType, Digest: x.Digest, Size: x.Size, ArtifactType: at, Annotations: m.Annotations})
	}
	return idx, nil
}
