package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/upstream"
)

// MaxManifestSize is the largest manifest Clowder accepts (4 MiB).
const MaxManifestSize = 4 << 20

// Media types of manifests Clowder asks for and understands.
const (
	MediaTypeDockerManifest      = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerSchema1       = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// ManifestAccept is the Accept list for manifest requests.
var ManifestAccept = []string{
	ocispec.MediaTypeImageIndex,
	ocispec.MediaTypeImageManifest,
	MediaTypeDockerManifestList,
	MediaTypeDockerManifest,
	MediaTypeDockerSchema1Signed,
	MediaTypeDockerSchema1,
}

// Credentials returns the username and password for an upstream host.
type Credentials func(host string) (user, pass string, ok bool)

// Options tune a Client.
type Options struct {
	// Name is the upstream's configured name (for messages).
	Name string
	// Transport is the shared round tripper.
	Transport http.RoundTripper
	// Credentials for the upstream host (and its token realm).
	Credentials Credentials
	// Accept overrides the manifest Accept list (ollama sends exactly one).
	Accept []string
	// NoHEAD makes Resolve use GET (registries without a manifest HEAD).
	NoHEAD bool
	// UserAgent is sent on every request.
	UserAgent string
}

// Client is an upstream.Source for an OCI/Docker distribution registry with
// the registry token flow.
type Client struct {
	base *url.URL // scheme and host: every request goes to base + /v2/...
	// prefix is the path of the configured URL ("docker.io" for
	// http://site:5000/docker.io): a repository prefix on the registry,
	// inserted after /v2/ in every URL and named in token scopes. A site
	// Clowder routes by it, so a worker Clowder reaches one of its upstreams.
	prefix string
	orig   string // the URL as configured (for Anonymous)
	opts   Options
	http   *http.Client

	mu     sync.Mutex
	tokens map[tokenKey]token  // by (realm, service, scope)
	byRepo map[string]tokenKey // last key that worked for a repo
	basic  map[string]bool     // repos that answered a Basic challenge
	public map[string]publicEntry
}

type tokenKey struct{ realm, service, scope string }

type token struct {
	value   string
	expires time.Time
}

var _ upstream.Source = (*Client)(nil)

// New returns a client for the registry at baseURL. A path in baseURL
// (http://site:5000/docker.io) is a repository prefix: repository
// library/alpine is asked for as /v2/docker.io/library/alpine/... .
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, err
	}
	prefix := strings.Trim(u.Path, "/")
	if u.RawPath != "" || strings.Contains(prefix, "//") || strings.ContainsAny(prefix, "?#%") {
		return nil, fmt.Errorf("upstream URL %q: the path must be a plain repository prefix", baseURL)
	}
	u = &url.URL{Scheme: u.Scheme, Host: u.Host}
	if opts.Transport == nil {
		opts.Transport = upstream.NewTransport()
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "clowder"
	}
	if len(opts.Accept) == 0 {
		opts.Accept = ManifestAccept
	}
	c := &Client{base: u, prefix: prefix, orig: baseURL, opts: opts, tokens: map[tokenKey]token{}, byRepo: map[string]tokenKey{}, basic: map[string]bool{}}
	c.http = &http.Client{
		Transport:     opts.Transport,
		CheckRedirect: upstream.CheckRedirect,
	}
	return c, nil
}

// Base returns the upstream's scheme and host (without the prefix).
func (c *Client) Base() *url.URL { return c.base }

// Prefix returns the repository prefix the configured URL's path gave, or "".
func (c *Client) Prefix() string { return c.prefix }

// Remote returns repo's name on the registry: under the prefix, if any.
func (c *Client) Remote(repo string) string {
	if c.prefix == "" {
		return repo
	}
	return c.prefix + "/" + repo
}

func (c *Client) url(repo, kind, ref string) string {
	return c.base.String() + "/v2/" + c.Remote(repo) + "/" + kind + "/" + ref
}

// Do sends a request for repo with the token flow: cached credentials first,
// one retry after a 401 challenge. The caller closes the body.
func (c *Client) Do(ctx context.Context, method, rawURL, repo string, hdr http.Header) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", c.opts.UserAgent)
		if a := c.authHeader(repo); a != "" {
			req.Header.Set("Authorization", a)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, &upstream.Error{Method: method, URL: rawURL, Err: err}
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			ch := resp.Header.Get("WWW-Authenticate")
			drain(resp)
			if err := c.authorize(ctx, ch, repo); err != nil {
				return nil, err
			}
			continue
		}
		return resp, nil
	}
}

func (c *Client) authHeader(repo string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.basic[repo] {
		if u, p, ok := c.creds(); ok {
			return basicAuth(u, p)
		}
	}
	k, ok := c.byRepo[repo]
	if !ok {
		return ""
	}
	t, ok := c.tokens[k]
	if !ok || time.Now().After(t.expires) {
		return ""
	}
	return "Bearer " + t.value
}

func (c *Client) creds() (string, string, bool) {
	if c.opts.Credentials == nil {
		return "", "", false
	}
	return c.opts.Credentials(c.base.Host)
}

// authorize answers a 401 challenge: a Bearer token from the realm, or Basic
// credentials.
func (c *Client) authorize(ctx context.Context, header, repo string) error {
	ch, err := upstream.ParseChallenge(header)
	if err != nil || header == "" {
		return &upstream.Error{Method: "GET", URL: c.base.String(), Status: http.StatusUnauthorized, Message: "upstream demands authentication without a usable challenge"}
	}
	switch ch.Scheme {
	case "basic":
		if _, _, ok := c.creds(); !ok {
			return &upstream.Error{Method: "GET", URL: c.base.String(), Status: http.StatusUnauthorized, Message: "upstream demands credentials and none are configured"}
		}
		c.mu.Lock()
		c.basic[repo] = true
		c.mu.Unlock()
		return nil
	case "bearer":
	default:
		return &upstream.Error{Method: "GET", URL: c.base.String(), Status: http.StatusUnauthorized, Message: "unsupported auth scheme " + ch.Scheme}
	}
	realm := ch.Params["realm"]
	ru, err := url.Parse(realm)
	if err != nil || (ru.Scheme != "http" && ru.Scheme != "https") || ru.Host == "" {
		return &upstream.Error{Method: "GET", URL: realm, Status: http.StatusUnauthorized, Message: "bad token realm"}
	}
	scope := ch.Params["scope"]
	if scope == "" {
		scope = "repository:" + c.Remote(repo) + ":pull"
	}
	key := tokenKey{realm: realm, service: ch.Params["service"], scope: scope}
	c.mu.Lock()
	if t, ok := c.tokens[key]; ok && time.Now().Before(t.expires) && c.byRepo[repo] != key {
		c.byRepo[repo] = key
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()

	q := ru.Query()
	if key.service != "" {
		q.Set("service", key.service)
	}
	for _, s := range strings.Fields(scope) {
		q.Add("scope", s)
	}
	ru.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ru.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	// Credentials go to the realm the upstream names (the token flow needs
	// them there), but never in clear text when the upstream itself is https.
	if u, p, ok := c.creds(); ok && !(ru.Scheme == "http" && c.base.Scheme == "https") {
		req.SetBasicAuth(u, p)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &upstream.Error{Method: "GET", URL: ru.String(), Err: fmt.Errorf("token server: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := errorFrom(resp)
		e.Message = strings.TrimSpace("token server: " + e.Message)
		if e.Status >= 500 || e.Status == http.StatusNotFound {
			// The token server is broken; that is no verdict on the object.
			e.Status = http.StatusBadGateway
		}
		return e
	}
	b, err := upstream.ReadCapped(resp.Body, 1<<20)
	if err != nil {
		return &upstream.Error{Method: "GET", URL: ru.String(), Err: err}
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := upstream.CheckJSONDepth(b, upstream.MaxJSONDepth); err != nil || json.Unmarshal(b, &tr) != nil {
		return &upstream.Error{Method: "GET", URL: ru.String(), Status: http.StatusBadGateway, Message: "token server sent no JSON"}
	}
	tok := tr.Token
	if tok == "" {
		tok = tr.AccessToken
	}
	if tok == "" {
		return &upstream.Error{Method: "GET", URL: ru.String(), Status: http.StatusBadGateway, Message: "token server sent no token"}
	}
	exp := time.Duration(tr.ExpiresIn) * time.Second
	if exp <= 0 {
		exp = 60 * time.Second
	}
	// Renew a little early.
	exp -= exp / 10
	c.mu.Lock()
	c.tokens[key] = token{value: tok, expires: time.Now().Add(exp)}
	c.byRepo[repo] = key
	c.mu.Unlock()
	return nil
}

func basicAuth(u, p string) string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(u, p)
	return r.Header.Get("Authorization")
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// errorFrom builds an upstream.Error from a non-success response, reading
// the registry's error body with a cap. It does not close the body.
func errorFrom(resp *http.Response) *upstream.Error {
	e := &upstream.Error{Method: resp.Request.Method, URL: resp.Request.URL.String(), Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &body) == nil {
		for _, x := range body.Errors {
			e.Codes = append(e.Codes, x.Code)
			if e.Message == "" {
				e.Message = x.Message
			}
		}
	}
	return e
}

func (c *Client) accept() http.Header {
	return http.Header{"Accept": {strings.Join(c.opts.Accept, ", ")}}
}

// Resolve implements upstream.Source with a HEAD (or a GET when the
// registry has no usable HEAD).
func (c *Client) Resolve(ctx context.Context, repo, ref string) (ocispec.Descriptor, error) {
	if c.opts.NoHEAD {
		d, _, err := c.Manifest(ctx, repo, ref)
		return d, err
	}
	resp, err := c.Do(ctx, http.MethodHead, c.url(repo, "manifests", ref), repo, c.accept())
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	drain(resp)
	if resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented {
		d, _, err := c.Manifest(ctx, repo, ref)
		return d, err
	}
	if resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, errorFrom(resp)
	}
	dg, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		// No digest in the HEAD answer: only a GET can tell.
		d, _, err := c.Manifest(ctx, repo, ref)
		return d, err
	}
	size := resp.ContentLength
	if size < 0 {
		size = -1
	}
	return ocispec.Descriptor{MediaType: baseMediaType(resp.Header.Get("Content-Type")), Digest: dg, Size: size}, nil
}

// Manifest implements upstream.Source.
func (c *Client) Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error) {
	resp, err := c.Do(ctx, http.MethodGet, c.url(repo, "manifests", ref), repo, c.accept())
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, nil, errorFrom(resp)
	}
	if resp.ContentLength > MaxManifestSize {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s:%s is %d bytes: %w", repo, ref, resp.ContentLength, upstream.ErrTooLarge)
	}
	b, err := upstream.ReadCapped(resp.Body, MaxManifestSize)
	if err != nil {
		if errors.Is(err, upstream.ErrTooLarge) {
			return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
		}
		return ocispec.Descriptor{}, nil, &upstream.Error{Method: "GET", URL: resp.Request.URL.String(), Err: err}
	}
	if err := upstream.CheckJSONDepth(b, upstream.MaxJSONDepth); err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	mt := MediaTypeOf(b, resp.Header.Get("Content-Type"))
	alg := digest.SHA256
	want, refIsDigest := digest.Digest(""), false
	if d, err := digest.Parse(ref); err == nil {
		want, refIsDigest, alg = d, true, d.Algorithm()
	}
	got := alg.FromBytes(b)
	if refIsDigest && got != want {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s@%s: got %s: %w", repo, want, got, upstream.ErrDigestMismatch)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && !refIsDigest && !isSchema1(mt) {
		if hd, err := digest.Parse(h); err == nil && hd.Algorithm() == alg && hd != got {
			return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s:%s: upstream says %s, bytes hash to %s: %w", repo, ref, hd, got, upstream.ErrDigestMismatch)
		}
	}
	return ocispec.Descriptor{MediaType: mt, Digest: got, Size: int64(len(b))}, b, nil
}

func isSchema1(mt string) bool {
	return mt == MediaTypeDockerSchema1 || mt == MediaTypeDockerSchema1Signed
}

// Blob implements upstream.Source: a GET from offset, following redirects to
// CDNs and object stores without credentials. Redirects are never cached.
func (c *Client) Blob(ctx context.Context, repo string, dgst digest.Digest, offset int64) (io.ReadCloser, int64, int64, error) {
	hdr := http.Header{}
	if offset > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	hdr.Set("Accept-Encoding", "identity")
	resp, err := c.Do(ctx, http.MethodGet, c.url(repo, "blobs", dgst.String()), repo, hdr)
	if err != nil {
		return nil, 0, 0, err
	}
	return BlobResponse(resp, offset)
}

// BlobResponse interprets a blob GET's answer (200 or 206) as a
// cas.FetchFunc result; other statuses become errors.
func BlobResponse(resp *http.Response, offset int64) (io.ReadCloser, int64, int64, error) {
	switch resp.StatusCode {
	case http.StatusOK:
		total := resp.ContentLength
		if total < 0 {
			total = -1
		}
		return resp.Body, 0, total, nil
	case http.StatusPartialContent:
		start, _, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start > offset {
			resp.Body.Close()
			return nil, 0, 0, &upstream.Error{Method: "GET", URL: resp.Request.URL.String(), Status: http.StatusBadGateway, Message: "bad Content-Range " + resp.Header.Get("Content-Range")}
		}
		return resp.Body, start, total, nil
	default:
		e := errorFrom(resp)
		resp.Body.Close()
		return nil, 0, 0, e
	}
}

// parseContentRange parses "bytes a-b/total" (total may be "*": -1).
func parseContentRange(s string) (start, end, total int64, ok bool) {
	s, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return
	}
	var err error
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return
		}
	}
	return start, end, total, true
}

// Tags implements upstream.Lister.
func (c *Client) Tags(ctx context.Context, repo, rawQuery string) ([]string, string, error) {
	u := c.base.String() + "/v2/" + c.Remote(repo) + "/tags/list"
	if rawQuery != "" {
		u += "?" + rawQuery
	}
	resp, err := c.Do(ctx, http.MethodGet, u, repo, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", errorFrom(resp)
	}
	b, err := upstream.ReadCapped(resp.Body, 16<<20)
	if err != nil {
		return nil, "", &upstream.Error{Method: "GET", URL: u, Err: err}
	}
	var tl struct {
		Tags []string `json:"tags"`
	}
	if err := upstream.CheckJSONDepth(b, upstream.MaxJSONDepth); err != nil || json.Unmarshal(b, &tl) != nil {
		return nil, "", &upstream.Error{Method: "GET", URL: u, Status: http.StatusBadGateway, Message: "tags/list: not JSON"}
	}
	next := ""
	if l := resp.Header.Get("Link"); l != "" {
		if lu := linkNext(l); lu != "" {
			if p, err := url.Parse(lu); err == nil {
				next = p.RawQuery
			}
		}
	}
	return tl.Tags, next, nil
}

// Referrers implements upstream.ReferrersLister.
func (c *Client) Referrers(ctx context.Context, repo string, dgst digest.Digest, artifactType string) (ocispec.Index, error) {
	u := c.url(repo, "referrers", dgst.String())
	if artifactType != "" {
		u += "?artifactType=" + url.QueryEscape(artifactType)
	}
	resp, err := c.Do(ctx, http.MethodGet, u, repo, http.Header{"Accept": {ocispec.MediaTypeImageIndex}})
	if err != nil {
		return ocispec.Index{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ocispec.Index{}, errorFrom(resp)
	}
	b, err := upstream.ReadCapped(resp.Body, MaxManifestSize)
	if err != nil {
		return ocispec.Index{}, &upstream.Error{Method: "GET", URL: u, Err: err}
	}
	var idx ocispec.Index
	if err := upstream.CheckJSONDepth(b, upstream.MaxJSONDepth); err != nil || json.Unmarshal(b, &idx) != nil {
		return ocispec.Index{}, &upstream.Error{Method: "GET", URL: u, Status: http.StatusBadGateway, Message: "referrers: not an index"}
	}
	return idx, nil
}

func linkNext(h string) string { return upstream.LinkNext(h) }

func baseMediaType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return mt
}

// MediaTypeOf returns a manifest's media type: the body's own mediaType
// field when it has one, else a manifest media type from Content-Type, else
// one guessed from the document's shape (registries that serve text/plain).
// A body nested deeper than upstream.MaxJSONDepth is not parsed.
func MediaTypeOf(body []byte, contentType string) string {
	var probe struct {
		SchemaVersion int                 `json:"schemaVersion"`
		MediaType     string              `json:"mediaType"`
		Manifests     json.RawMessage     `json:"manifests"`
		Layers        json.RawMessage     `json:"layers"`
		FSLayers      json.RawMessage     `json:"fsLayers"`
		Signatures    json.RawMessage     `json:"signatures"`
		Config        *ocispec.Descriptor `json:"config"`
	}
	if upstream.CheckJSONDepth(body, upstream.MaxJSONDepth) == nil {
		_ = json.Unmarshal(body, &probe)
	}
	if probe.MediaType != "" {
		return probe.MediaType
	}
	ct := baseMediaType(contentType)
	for _, a := range ManifestAccept {
		if ct == a {
			return ct
		}
	}
	switch {
	case probe.SchemaVersion == 1 || probe.FSLayers != nil:
		if probe.Signatures != nil {
			return MediaTypeDockerSchema1Signed
		}
		return MediaTypeDockerSchema1
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case probe.Config != nil && strings.HasPrefix(probe.Config.MediaType, "application/vnd.docker."):
		return MediaTypeDockerManifest
	case probe.Config != nil || probe.Layers != nil:
		return ocispec.MediaTypeImageManifest
	}
	if ct != "" && ct != "text/plain" && ct != "application/octet-stream" && ct != "application/json" {
		return ct
	}
	return ocispec.MediaTypeImageManifest
}

// Anonymous returns a client for the same registry without credentials
// (its own token cache), to learn whether content is public.
func (c *Client) Anonymous() *Client {
	opts := c.opts
	opts.Credentials = nil
	a, _ := New(c.orig, opts)
	return a
}

// PublicAccess reports whether repo:ref can be read without the proxy's
// credentials. With no credentials configured everything fetched is public.
// The answer is cached per repository for ten minutes.
func (c *Client) PublicAccess(ctx context.Context, repo, ref string) bool {
	if _, _, ok := c.creds(); !ok {
		return true
	}
	c.mu.Lock()
	if c.public == nil {
		c.public = map[string]publicEntry{}
	}
	e, ok := c.public[repo]
	c.mu.Unlock()
	if ok && time.Since(e.at) < 10*time.Minute {
		return e.public
	}
	_, err := c.Anonymous().Resolve(ctx, repo, ref)
	pub := err == nil
	c.mu.Lock()
	c.public[repo] = publicEntry{public: pub, at: time.Now()}
	c.mu.Unlock()
	return pub
}

type publicEntry struct {
	public bool
	at     time.Time
}

// BlobExists asks the upstream (HEAD) whether repo holds blob d.
func (c *Client) BlobExists(ctx context.Context, repo string, d digest.Digest) error {
	resp, err := c.Do(ctx, http.MethodHead, c.url(repo, "blobs", d.String()), repo, nil)
	if err != nil {
		return err
	}
	drain(resp)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return nil // a redirect to the object store: it exists
	}
	if resp.StatusCode != http.StatusOK {
		return errorFrom(resp)
	}
	return nil
}
