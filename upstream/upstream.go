package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Source is one upstream registry as the proxy sees it.
type Source interface {
	// Resolve asks the upstream what ref (tag or digest) points to now,
	// cheaply (a HEAD where the upstream allows it). The descriptor's size
	// is -1 when the upstream did not say.
	Resolve(ctx context.Context, repo, ref string) (ocispec.Descriptor, error)
	// Manifest fetches a manifest by tag or digest. The returned descriptor
	// carries the digest of the bytes (verified against a requested digest
	// and the upstream's Docker-Content-Digest) and the media type.
	Manifest(ctx context.Context, repo, ref string) (ocispec.Descriptor, []byte, error)
	// Blob opens a blob from offset (see cas.FetchFunc for start and total).
	Blob(ctx context.Context, repo string, dgst digest.Digest, offset int64) (body io.ReadCloser, start, total int64, err error)
}

// Lister is a Source that lists tags.
type Lister interface {
	// Tags returns the upstream's answer to tags/list with its query (n,
	// last) passed through, and the upstream's Link "next" query, if any.
	Tags(ctx context.Context, repo, rawQuery string) (tags []string, nextQuery string, err error)
}

// ReferrersLister is a Source that answers the referrers API.
type ReferrersLister interface {
	Referrers(ctx context.Context, repo string, dgst digest.Digest, artifactType string) (ocispec.Index, error)
}

// Sentinel errors.
var (
	// ErrUnavailable means the upstream could not be reached or answered
	// with a server error.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrNotFound means the upstream says the object does not exist.
	ErrNotFound = errors.New("not found upstream")
	// ErrDigestMismatch means the upstream's bytes do not hash to the digest asked for.
	ErrDigestMismatch = errors.New("upstream content does not match its digest")
	// ErrTooLarge means a manifest or document exceeds the size limit.
	ErrTooLarge = errors.New("upstream object too large")
)

// Error is an upstream's non-success answer.
type Error struct {
	Method     string
	URL        string
	Status     int
	Codes      []string // the registry's error codes, if it sent any
	Message    string
	RetryAfter string
	Err        error // transport error when Status is 0
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("%s %s: %v", e.Method, redact(e.URL), redactErr(e.Err))
	}
	s := fmt.Sprintf("%s %s: %d %s", e.Method, redact(e.URL), e.Status, http.StatusText(e.Status))
	if len(e.Codes) > 0 {
		s += " (" + strings.Join(e.Codes, ", ") + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap maps the answer to a sentinel; a transport failure (Status 0) also
// exposes its cause (ErrBlockedAddress, context.DeadlineExceeded).
func (e *Error) Unwrap() []error {
	switch {
	case e.Status == 0 && e.Err != nil:
		return []error{ErrUnavailable, e.Err}
	case e.Status == 0:
		return []error{ErrUnavailable}
	case e.Status == http.StatusNotFound:
		return []error{ErrNotFound}
	case e.Status >= 500:
		return []error{ErrUnavailable}
	}
	return nil
}

// RetryDelay is the wait a 429 or 503 asked for in Retry-After (seconds or
// an HTTP date), if it gave one.
func (e *Error) RetryDelay() (time.Duration, bool) {
	if (e.Status != http.StatusTooManyRequests && e.Status != http.StatusServiceUnavailable) || e.RetryAfter == "" {
		return 0, false
	}
	v := strings.TrimSpace(e.RetryAfter)
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, 1<<20)) * time.Second, true // no overflow past ~12 days
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// Temporary reports whether a retry may succeed. A destination the SSRF
// guard refused stays refused.
func (e *Error) Temporary() bool {
	if e.Status == 0 && errors.Is(e.Err, ErrBlockedAddress) {
		return false
	}
	return e.Status == 0 || e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// redact drops the query string (signed URLs) from a URL for messages.
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

// redactErr drops the query string of the URL in a *url.Error (a redirect
// to a presigned object-store URL carries its signature there).
func redactErr(err error) any {
	var ue *url.Error
	if !errors.As(err, &ue) || !strings.Contains(ue.URL, "?") {
		return err
	}
	if err == error(ue) {
		c := *ue
		c.URL = redact(c.URL)
		return &c
	}
	return strings.ReplaceAll(err.Error(), ue.URL, redact(ue.URL))
}

// NewTransport returns the HTTP transport shared by upstream clients.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Blobs are content-addressed: never let the transport decode them.
		DisableCompression: true,
		ReadBufferSize:     256 << 10,
	}
}

// CheckRedirect is the redirect policy of upstream clients: at most 10
// hops, and credentials never forwarded to another host or scheme (CDNs,
// object stores).
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		req.Header.Del("Authorization")
	}
	return nil
}

// ReadCapped reads at most limit bytes of r, failing with ErrTooLarge past it.
func ReadCapped(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("more than %d bytes: %w", limit, ErrTooLarge)
	}
	return b, nil
}

// LinkNext returns the rel="next" URL of a Link header (RFC 8288), as
// registries (tags/list) and the Hugging Face Hub (tree) paginate.
func LinkNext(h string) string {
	for _, part := range strings.Split(h, ",") {
		part = strings.TrimSpace(part)
		if !strings.Contains(part, `rel="next"`) && !strings.Contains(part, "rel=next") {
			continue
		}
		if i, j := strings.IndexByte(part, '<'), strings.IndexByte(part, '>'); i >= 0 && j > i {
			return part[i+1 : j]
		}
	}
	return ""
}
