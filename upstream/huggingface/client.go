// Package huggingface is the upstream client for the Hugging Face Hub's
// https API (shared PROTOCOLS.md section 2): repo info, tree listings and
// file downloads, for models, datasets and spaces, at any revision.
//
// It follows the hub's redirects itself: relative ones (renamed or miscased
// repos, /api/resolve-cache/...) keep their query string; a redirect to
// another host (the CDN) never carries the Authorization header. Xet is never
// used: the plain /resolve download serves every file.
package huggingface

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/clowder-dev/clowder/upstream"
)

// Repo types.
const (
	Model   = "model"
	Dataset = "dataset"
	Space   = "space"
)

// RepoRef names a repository on the hub.
type RepoRef struct {
	Type string // model, dataset, space
	ID   string // org/name (or a legacy one-segment name)
}

// APIPrefix is the /api/{type}s/{id} path of the repo.
func (r RepoRef) APIPrefix() string { return "/api/" + r.Type + "s/" + r.ID }

// URLPrefix is the path prefix of the repo's files ("" for models,
// "datasets/", "spaces/").
func (r RepoRef) URLPrefix() string {
	if r.Type == Model {
		return "/" + r.ID
	}
	return "/" + r.Type + "s/" + r.ID
}

func (r RepoRef) String() string {
	if r.Type == Model {
		return r.ID
	}
	return r.Type + "s/" + r.ID
}

// Error is a hub error answer, with the hub's classification headers.
type Error struct {
	Up      upstream.Error
	Code    string // X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo
	HubMsg  string // X-Error-Message
	Commit  string // X-Repo-Commit (EntryNotFound carries it)
	Body    []byte
	Headers http.Header
}

func (e *Error) Error() string {
	s := e.Up.Error()
	if e.Code != "" {
		s += " [" + e.Code + "]"
	}
	if e.HubMsg != "" {
		s += " " + e.HubMsg
	}
	return s
}

// Unwrap exposes the embedded upstream.Error (and its sentinels).
func (e *Error) Unwrap() error { return &e.Up }

// Temporary reports whether a retry may succeed.
func (e *Error) Temporary() bool { return e.Up.Temporary() }

// Client talks to one hub.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
	ua    string
}

// New returns a client for the hub at baseURL with an optional token.
func New(baseURL, token string, transport http.RoundTripper, userAgent string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, err
	}
	if transport == nil {
		transport = upstream.NewTransport()
	}
	c := &Client{base: u, token: token, ua: userAgent}
	c.http = &http.Client{
		Transport:     transport,
		CheckRedirect: upstream.CheckRedirect,
	}
	return c, nil
}

// Base returns the hub URL.
func (c *Client) Base() *url.URL { return c.base }

// ValidRevision reports whether rev can be a git revision (a commit id, a
// branch or tag name, refs/pr/N) by git's ref-name rules that matter here:
// no "." or ".." component, no "..", no control character or backslash,
// no empty component. Anything else could turn into a different URL path
// on the hub.
func ValidRevision(rev string) bool {
	if rev == "" || len(rev) > 256 || strings.Contains(rev, "..") || strings.ContainsAny(rev, "\\ ~^:?*[") {
		return false
	}
	for _, c := range rev {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	for _, seg := range strings.Split(rev, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") {
			return false
		}
	}
	return true
}

// ValidPath reports whether p is a relative file path inside a repository:
// no empty, "." or ".." segment, no leading slash, backslash or control
// character.
func ValidPath(p string) bool {
	if p == "" || len(p) > 4096 || strings.Contains(p, "\\") {
		return false
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// checkRevPath refuses to put a revision or path with dot segments into a hub
// URL (the hub, or a proxy before it, could resolve them into another
// endpoint, called with the proxy's token).
func checkRevPath(rev, path string) error {
	if rev != "" && !ValidRevision(rev) {
		return fmt.Errorf("revision %q: %w", rev, ErrUnsafePath)
	}
	if path != "" && !ValidPath(path) {
		return fmt.Errorf("path %q: %w", path, ErrUnsafePath)
	}
	return nil
}

// ErrUnsafePath means a revision or file path would change the shape of a
// hub URL ("..", "." or empty segments, control characters).
var ErrUnsafePath = errors.New("unsafe revision or path")

func (c *Client) newRequest(ctx context.Context, method, pathAndQuery, auth string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+pathAndQuery, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", c.ua)
	req.Header.Set("Accept-Encoding", "identity")
	switch {
	case auth != "":
		req.Header.Set("Authorization", auth)
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do sends a request (following redirects) and turns error answers into *Error.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &upstream.Error{Method: req.Method, URL: req.URL.String(), Err: err}
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, errorFrom(resp)
	}
	return resp, nil
}

func errorFrom(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{
		Up:      upstream.Error{Method: resp.Request.Method, URL: resp.Request.URL.String(), Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")},
		Code:    resp.Header.Get("X-Error-Code"),
		HubMsg:  resp.Header.Get("X-Error-Message"),
		Commit:  resp.Header.Get("X-Repo-Commit"),
		Body:    b,
		Headers: resp.Header.Clone(),
	}
	if e.HubMsg == "" {
		var j struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &j) == nil {
			e.HubMsg = j.Error
		}
	}
	return e
}

// Info fetches /api/{type}s/{id}[/revision/{rev}]?rawQuery: the raw JSON.
func (c *Client) Info(ctx context.Context, repo RepoRef, rev, rawQuery, auth string) ([]byte, error) {
	if err := checkRevPath(rev, ""); err != nil {
		return nil, err
	}
	p := repo.APIPrefix()
	if rev != "" {
		p += "/revision/" + url.PathEscape(rev)
	}
	if rawQuery != "" {
		p += "?" + rawQuery
	}
	req, err := c.newRequest(ctx, http.MethodGet, p, auth)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return readJSON(resp, 32<<20)
}

// readJSON reads a hub JSON answer with a size cap, refusing documents
// nested deeper than upstream.MaxJSONDepth.
func readJSON(resp *http.Response, limit int64) ([]byte, error) {
	b, err := upstream.ReadCapped(resp.Body, limit)
	if err != nil {
		return nil, err
	}
	if err := upstream.CheckJSONDepth(b, upstream.MaxJSONDepth); err != nil {
		return nil, &upstream.Error{Method: resp.Request.Method, URL: resp.Request.URL.String(), Status: http.StatusBadGateway, Message: "hub JSON " + err.Error()}
	}
	return b, nil
}

// TreeEntry is one entry of a tree listing.
type TreeEntry struct {
	Type string `json:"type"` // file, directory
	OID  string `json:"oid"`  // git sha1 (of the LFS pointer for LFS files)
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *LFS   `json:"lfs,omitempty"`
}

// LFS is an LFS file's pointer data.
type LFS struct {
	OID         string `json:"oid"` // sha256 of the content
	Size        int64  `json:"size"`
	PointerSize int64  `json:"pointerSize,omitempty"`
}

// TreePage fetches one page of /api/{type}s/{id}/tree/{rev}[/{path}]; rawQuery
// is passed through. It returns the raw JSON and the next page's URL (as the
// hub sent it in Link), if any.
func (c *Client) TreePage(ctx context.Context, repo RepoRef, rev, path, rawQuery, auth string) ([]byte, string, error) {
	if err := checkRevPath(rev, path); err != nil {
		return nil, "", err
	}
	p := repo.APIPrefix() + "/tree/" + url.PathEscape(rev)
	if path != "" {
		p += "/" + escapePath(path)
	}
	if rawQuery != "" {
		p += "?" + rawQuery
	}
	return c.treeURL(ctx, p, auth)
}

// TreeNext fetches a page by the URL a Link header gave.
func (c *Client) TreeNext(ctx context.Context, next, auth string) ([]byte, string, error) {
	u, err := url.Parse(next)
	if err != nil {
		return nil, "", err
	}
	// Only follow pagination on the hub itself.
	if u.Host != "" && u.Host != c.base.Host {
		return nil, "", fmt.Errorf("tree pagination to another host %s refused", u.Host)
	}
	return c.treeURL(ctx, u.RequestURI(), auth)
}

func (c *Client) treeURL(ctx context.Context, pathAndQuery, auth string) ([]byte, string, error) {
	req, err := c.newRequest(ctx, http.MethodGet, pathAndQuery, auth)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := readJSON(resp, 64<<20)
	if err != nil {
		return nil, "", err
	}
	return b, LinkNext(resp.Header.Get("Link")), nil
}

// Tree lists every file of the repo at rev, recursively, following pages.
func (c *Client) Tree(ctx context.Context, repo RepoRef, rev, auth string) ([]TreeEntry, error) {
	b, next, err := c.TreePage(ctx, repo, rev, "", "recursive=true&expand=false", auth)
	var all []TreeEntry
	for page := 0; ; page++ {
		if err != nil {
			return nil, err
		}
		var entries []TreeEntry
		if err := json.Unmarshal(b, &entries); err != nil {
			return nil, fmt.Errorf("tree of %s@%s: %w", repo, rev, err)
		}
		all = append(all, entries...)
		if next == "" || page > 10000 {
			return all, nil
		}
		b, next, err = c.TreeNext(ctx, next, auth)
	}
}

// FileMeta is what a resolve HEAD tells about a file.
type FileMeta struct {
	Commit string
	ETag   string // sha1 for regular files, sha256 for LFS
	Size   int64
}

// Open downloads a file from offset: the body, where it starts (0 when the
// server ignored Range) and the total size (-1 when unknown).
func (c *Client) Open(ctx context.Context, repo RepoRef, rev, path string, offset int64, auth string) (io.ReadCloser, int64, int64, error) {
	if err := checkRevPath(rev, path); err != nil {
		return nil, 0, 0, err
	}
	req, err := c.newRequest(ctx, http.MethodGet, repo.URLPrefix()+"/resolve/"+url.PathEscape(rev)+"/"+escapePath(path), auth)
	if err != nil {
		return nil, 0, 0, err
	}
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, 0, 0, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		total := resp.ContentLength
		if total < 0 {
			total = -1
		}
		return resp.Body, 0, total, nil
	case http.StatusPartialContent:
		var a, b, t int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &a, &b, &t); err != nil || a > offset {
			resp.Body.Close()
			return nil, 0, 0, &upstream.Error{Method: "GET", URL: req.URL.String(), Status: http.StatusBadGateway, Message: "bad Content-Range"}
		}
		return resp.Body, a, t, nil
	}
	resp.Body.Close()
	return nil, 0, 0, &upstream.Error{Method: "GET", URL: req.URL.String(), Status: http.StatusBadGateway, Message: "unexpected status " + resp.Status}
}

// escapePath escapes each segment of a file path, keeping the slashes.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// LinkNext returns the rel="next" URL of a Link header.
func LinkNext(h string) string { return upstream.LinkNext(h) }

// StripXet removes Xet fields (xetHash, xetEnabled, ...) from hub JSON at
// any depth, so clients stay on /resolve through the proxy.
func StripXet(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k := range x {
			if strings.HasPrefix(strings.ToLower(k), "xet") {
				delete(x, k)
				continue
			}
			x[k] = StripXet(x[k])
		}
	case []any:
		for i := range x {
			x[i] = StripXet(x[i])
		}
	}
	return v
}

// PathsInfo posts /api/{type}s/{id}/paths-info/{rev} with the client's body
// (JSON {"paths":[...],"expand":bool} or the form huggingface_hub sends).
func (c *Client) PathsInfo(ctx context.Context, repo RepoRef, rev, contentType string, body []byte, auth string) ([]byte, error) {
	if err := checkRevPath(rev, ""); err != nil {
		return nil, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, repo.APIPrefix()+"/paths-info/"+url.PathEscape(rev), auth)
	if err != nil {
		return nil, err
	}
	req.Body = io.NopCloser(strings.NewReader(string(body)))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(body))), nil }
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return readJSON(resp, 32<<20)
}

// Head checks that auth may read a file: a HEAD of its resolve URL without
// following the redirect to the CDN (a 3xx is access granted).
func (c *Client) Head(ctx context.Context, repo RepoRef, rev, path, auth string) error {
	req, err := c.newRequest(ctx, http.MethodHead, repo.URLPrefix()+"/resolve/"+url.PathEscape(rev)+"/"+escapePath(path), auth)
	if err != nil {
		return err
	}
	if auth == "" {
		req.Header.Del("Authorization") // never the proxy's own token here
	}
	noFollow := *c.http
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Do(req)
	if err != nil {
		return &upstream.Error{Method: "HEAD", URL: req.URL.String(), Err: err}
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return errorFrom(resp)
	}
	return nil
}
