package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/upstream"
	hf "github.com/clowder-dev/clowder/upstream/huggingface"
)

// The Hugging Face Hub API on the same listener (HF_ENDPOINT=http://clowder:5000):
//   GET  /api/{models|datasets|spaces}/{repo}[/revision/{rev}]
//   GET  /api/{type}s/{repo}/tree/{rev}[/{path}]?recursive=
//   HEAD|GET /[datasets/|spaces/]{repo}/resolve/{rev}/{path}

var repoTypes = map[string]string{"models": hf.Model, "datasets": hf.Dataset, "spaces": hf.Space}

// splitEscaped splits an escaped path into unescaped segments, so that a
// revision sent as refs%2Fpr%2F1 stays one segment.
func splitEscaped(p string) ([]string, bool) {
	raw := strings.Split(strings.Trim(p, "/"), "/")
	out := make([]string, len(raw))
	for i, s := range raw {
		u, err := url.PathUnescape(s)
		if err != nil || strings.ContainsRune(u, 0) {
			return nil, false
		}
		out[i] = u
	}
	return out, true
}

// repoAt finds a repo id (one or two segments) followed by keyword at segs.
func repoAt(segs []string, keywords ...string) (id string, kw string, rest []string, ok bool) {
	for _, n := range []int{2, 1} {
		if len(segs) > n {
			for _, k := range keywords {
				if segs[n] == k {
					return strings.Join(segs[:n], "/"), k, segs[n+1:], true
				}
			}
		}
	}
	return "", "", nil, false
}

// validRepoID accepts "name" or "org/name" of letters, digits, '-', '_'
// and '.'. An id of more segments (a %2F inside one) would put other hub
// endpoints under the repo's path.
func validRepoID(id string) bool {
	if id == "" || len(id) > 200 || strings.Count(id, "/") > 1 {
		return false
	}
	for _, s := range strings.Split(id, "/") {
		if s == "" || s == "." || s == ".." || strings.HasPrefix(s, "-") {
			return false
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				return false
			}
		}
	}
	return true
}

func (s *Server) hfFront() *proxy.HF { return s.proxy.HF() }

// hfMayRead decides who may read a private or gated repo's cached files:
// a Clowder user the rules let in, or a client whose own hub token the hub
// confirms (checked upstream, cached briefly).
func (s *Server) hfMayRead(r *http.Request, h *proxy.HF, v *proxy.HFView, file string) bool {
	if s.opts.Auth != nil {
		if id := identityOf(r); id != nil && !id.Anonymous {
			return true
		}
	}
	if file == "" && len(v.Files) > 0 {
		file = v.Files[0].Path
	}
	return h.CheckAccess(r.Context(), v, file, s.upstreamAuth(r))
}

// upstreamAuth is the client's own hub credential to use upstream: its
// Authorization header as is when Clowder authentication is off; with it on,
// only a Hugging Face token (Bearer hf_...), never a Clowder credential.
func (s *Server) upstreamAuth(r *http.Request) string {
	if s.opts.Auth == nil {
		return r.Header.Get("Authorization")
	}
	if id := identityOf(r); id != nil && id.HFToken != "" {
		return "Bearer " + id.HFToken
	}
	return ""
}

// handleHFAPI serves /api/...
func (s *Server) handleHFAPI(w http.ResponseWriter, r *http.Request) {
	h := s.hfFront()
	segs, ok := splitEscaped(strings.TrimPrefix(r.URL.EscapedPath(), "/api/"))
	if h == nil || !ok || len(segs) < 2 || repoTypes[segs[0]] == "" {
		hfError(w, r, http.StatusNotFound, "", "Sorry, we can't find the page you are looking for.")
		return
	}
	typ := repoTypes[segs[0]]
	segs = segs[1:]
	id, kw, rest, found := repoAt(segs, "revision", "tree", "paths-info")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !(kw == "paths-info" && r.Method == http.MethodPost) {
		hfError(w, r, http.StatusMethodNotAllowed, "", r.Method+" is not supported through the cache")
		return
	}
	if !found {
		if len(segs) > 2 {
			hfError(w, r, http.StatusNotFound, "", "unknown API route")
			return
		}
		id = strings.Join(segs, "/")
	}
	if !validRepoID(id) {
		hfError(w, r, http.StatusBadRequest, "", fmt.Sprintf("invalid repo id %q", id))
		return
	}
	repo := hf.RepoRef{Type: typ, ID: id}
	info(r).upstream = h.Upstream().Name
	info(r).name = repo.String()
	if !s.authorize(w, r, "pull", h.OCIName(repo), "") {
		return
	}
	r, cancel := s.limit(r, false)
	defer cancel()
	auth := s.upstreamAuth(r)
	switch kw {
	case "", "revision":
		rev := ""
		if kw == "revision" {
			if len(rest) != 1 {
				hfError(w, r, http.StatusNotFound, "", "unknown API route")
				return
			}
			rev = rest[0]
			if !hf.ValidRevision(rev) {
				hfError(w, r, http.StatusBadRequest, "", fmt.Sprintf("invalid revision %q", rev))
				return
			}
		}
		b, err := h.Info(r.Context(), repo, rev, r.URL.RawQuery, auth)
		if err != nil {
			writeHFErr(w, r, err)
			return
		}
		writeRawJSON(w, r, b)
	case "paths-info":
		if len(rest) == 1 && !hf.ValidRevision(rest[0]) {
			hfError(w, r, http.StatusBadRequest, "", fmt.Sprintf("invalid revision %q", rest[0]))
			return
		}
		if len(rest) != 1 || r.Method != http.MethodPost {
			hfError(w, r, http.StatusNotFound, "", "unknown API route")
			return
		}
		s.handleHFPathsInfo(w, r, h, repo, rest[0], auth)
	case "tree":
		if len(rest) < 1 {
			hfError(w, r, http.StatusNotFound, "", "unknown API route")
			return
		}
		if dir := strings.Join(rest[1:], "/"); !hf.ValidRevision(rest[0]) || (dir != "" && !hf.ValidPath(dir)) {
			hfError(w, r, http.StatusBadRequest, "", fmt.Sprintf("invalid revision %q or path %q", rest[0], dir))
			return
		}
		s.handleHFTree(w, r, h, repo, rest[0], strings.Join(rest[1:], "/"), auth)
	}
}

func (s *Server) handleHFTree(w http.ResponseWriter, r *http.Request, h *proxy.HF, repo hf.RepoRef, rev, dir, auth string) {
	b, next, err := h.Client().TreePage(r.Context(), repo, rev, dir, r.URL.RawQuery, auth)
	if err == nil {
		b, err = proxy.SanitizeHubJSON(b)
	}
	if err == nil {
		if next != "" {
			if nu, perr := url.Parse(next); perr == nil {
				w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next"`, s.publicBase(r), nu.RequestURI()))
			}
		}
		info(r).cache = "miss"
		writeRawJSON(w, r, b)
		return
	}
	// The hub is unreachable: list the cached view of the revision.
	v, ok := s.hfFallbackView(w, r, h, repo, rev, auth, err)
	if !ok {
		return
	}
	out, _ := json.Marshal(proxy.TreeFromView(v, dir, r.URL.Query().Get("recursive") == "true" || r.URL.Query().Get("recursive") == "1"))
	writeRawJSON(w, r, out)
}

// handleHFPathsInfo answers POST paths-info: the hub's answer when it
// gives one, else the cached view's.
func (s *Server) handleHFPathsInfo(w http.ResponseWriter, r *http.Request, h *proxy.HF, repo hf.RepoRef, rev, auth string) {
	body, err := upstream.ReadCapped(r.Body, 1<<20)
	if err != nil {
		hfError(w, r, http.StatusRequestEntityTooLarge, "", "paths-info body too large")
		return
	}
	ct := r.Header.Get("Content-Type")
	b, err := h.Client().PathsInfo(r.Context(), repo, rev, ct, body, auth)
	if err == nil {
		if b, err = proxy.SanitizeHubJSON(b); err == nil {
			writeRawJSON(w, r, b)
			return
		}
	}
	v, ok := s.hfFallbackView(w, r, h, repo, rev, auth, err)
	if !ok {
		return
	}
	var paths []string
	if strings.HasPrefix(ct, "application/json") {
		var req struct {
			Paths []string `json:"paths"`
		}
		if json.Unmarshal(body, &req) != nil {
			hfError(w, r, http.StatusBadRequest, "", "paths-info: bad JSON body")
			return
		}
		paths = req.Paths
	} else {
		q, perr := url.ParseQuery(string(body))
		if perr != nil {
			hfError(w, r, http.StatusBadRequest, "", "paths-info: bad form body")
			return
		}
		paths = q["paths"]
	}
	out, _ := json.Marshal(proxy.PathsInfoFromView(v, paths))
	writeRawJSON(w, r, out)
}

// hfFallbackView handles a failed hub listing (err): the hub's own verdict
// is relayed; when the hub cannot answer, the revision's cached view is
// returned (to clients that may read it) to answer from.
func (s *Server) hfFallbackView(w http.ResponseWriter, r *http.Request, h *proxy.HF, repo hf.RepoRef, rev, auth string, err error) (*proxy.HFView, bool) {
	var he *hf.Error
	if errors.As(err, &he) && he.Up.Status < 500 && he.Up.Status != 429 {
		writeHFErr(w, r, err)
		return nil, false
	}
	v, verr := h.Resolve(r.Context(), repo, rev, auth)
	if verr != nil || (v.Private && !s.hfMayRead(r, h, v, "")) {
		writeHFErr(w, r, err)
		return nil, false
	}
	info(r).cache = "stale"
	return v, true
}

// publicBase is the URL clients reach this listener at.
func (s *Server) publicBase(r *http.Request) string {
	if s.opts.PublicURL != "" {
		return strings.TrimSuffix(s.opts.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// handleHFResolve serves HEAD|GET /[datasets/|spaces/]{repo}/resolve/{rev}/{path}.
// It reports whether the path was a resolve URL.
func (s *Server) handleHFResolve(w http.ResponseWriter, r *http.Request) bool {
	h := s.hfFront()
	if h == nil {
		return false
	}
	segs, ok := splitEscaped(r.URL.EscapedPath())
	if !ok || len(segs) < 4 {
		return false
	}
	typ := hf.Model
	if t := repoTypes[segs[0]]; t != "" && t != hf.Model {
		typ, segs = t, segs[1:]
	}
	id, _, rest, found := repoAt(segs, "resolve")
	if !found || len(rest) < 2 {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hfError(w, r, http.StatusMethodNotAllowed, "", r.Method+" is not supported on resolve")
		return true
	}
	rev, file := rest[0], strings.Join(rest[1:], "/")
	if !validRepoID(id) || !hf.ValidRevision(rev) || !hf.ValidPath(file) {
		hfError(w, r, http.StatusBadRequest, "", "invalid repo id, revision or file path")
		return true
	}
	repo := hf.RepoRef{Type: typ, ID: id}
	info(r).upstream = h.Upstream().Name
	info(r).name = repo.String() + "/" + file
	if !s.authorize(w, r, "pull", h.OCIName(repo), "") {
		return true
	}
	r, cancel := s.limit(r, true)
	defer cancel()
	auth := s.upstreamAuth(r)
	v, err := h.Resolve(r.Context(), repo, rev, auth)
	if err != nil {
		writeHFErr(w, r, err)
		return true
	}
	if v.Private && !s.hfMayRead(r, h, v, file) {
		hfError(w, r, http.StatusUnauthorized, "GatedRepo", fmt.Sprintf("Access to %s is restricted: it was cached for another credential. Send your own Hugging Face token.", repo))
		return true
	}
	w.Header().Set("X-Repo-Commit", v.Commit)
	f, ok := v.File(file)
	if !ok {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		w.Header().Set("X-Error-Message", "Entry not found")
		hfError(w, r, http.StatusNotFound, "EntryNotFound", fmt.Sprintf("%s does not exist on %q", file, rev))
		return true
	}
	b, err := h.OpenFile(r.Context(), v, f, auth)
	if err != nil {
		writeHFErr(w, r, err)
		return true
	}
	defer b.Close()
	info(r).cache = cacheState(b.Hit, v.Stale)
	et := `"` + f.ETag() + `"`
	w.Header().Set("ETag", et)
	w.Header().Set("X-Linked-Etag", et)
	w.Header().Set("X-Linked-Size", strconv.FormatInt(f.Size, 10))
	serveBlob(w, r, b, "")
	return true
}

// hfError writes a hub-style error: JSON {"error": msg} with X-Error-Code
// and X-Error-Message, which huggingface_hub classifies errors by.
func hfError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", strings.ReplaceAll(msg, "\n", " "))
	setErr(r, &Error{Status: status, Code: code, Message: msg})
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// writeHFErr relays a hub error unchanged (status, X-Error-Code,
// X-Error-Message, body), and maps Clowder's own errors to hub-style ones.
func writeHFErr(w http.ResponseWriter, r *http.Request, err error) {
	var he *hf.Error
	if errors.As(err, &he) {
		for _, k := range []string{"X-Error-Code", "X-Error-Message", "X-Repo-Commit", "Retry-After", "WWW-Authenticate"} {
			if v := he.Headers.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		setErr(r, &Error{Status: he.Up.Status, Code: he.Code, Message: he.Error()})
		body := he.Body
		if len(body) == 0 || !json.Valid(body) {
			body, _ = json.Marshal(map[string]string{"error": he.HubMsg})
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(he.Up.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
		return
	}
	e := classify(err)
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.Status == 0 {
		e.Status = http.StatusBadGateway
	}
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	hfError(w, r, e.Status, "", e.Message)
}

func writeRawJSON(w http.ResponseWriter, r *http.Request, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}
