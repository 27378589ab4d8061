package testutil

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// HubFile is a file in a fake hub repo.
type HubFile struct {
	Data []byte
	LFS  bool
}

// HubRepo is a fake hub repository.
type HubRepo struct {
	Type    string            // model, dataset
	ID      string            // canonical spelling, Org/Name
	Refs    map[string]string // branch, tag or refs/pr/N -> commit
	Commits map[string]map[string]HubFile
	Gated   bool // files need a token
}

// Hub is a fake Hugging Face Hub on loopback that behaves like the real one
// where clients can tell: regular files answered 200 with their git sha1 as
// ETag, LFS files with a 302 to a second CDN listener (signed URLs that
// expire) carrying X-Linked-Etag/X-Linked-Size, Xet headers and xetHash
// fields everywhere, a relative 307 for a miscased repo id, a relative 307
// to /api/resolve-cache/... whose query must be kept, paginated trees with
// absolute Link headers, and a gated repo that needs a token.
type Hub struct {
	t      testing.TB
	Server *httptest.Server
	CDN    *httptest.Server
	URL    string
	Token  string // accepted for gated repos
	mu     sync.Mutex
	repos  map[string]*HubRepo // key: type/lower(id)
	cdn    map[string]int      // full CDN GETs per sha256
	reqs   []string
	key    []byte
}

// NewHub starts a fake hub.
func NewHub(t testing.TB) *Hub {
	t.Helper()
	h := &Hub{t: t, repos: map[string]*HubRepo{}, cdn: map[string]int{}, key: []byte("cdn"), Token: "hf_testtoken"}
	h.CDN = httptest.NewServer(http.HandlerFunc(h.serveCDN))
	t.Cleanup(h.CDN.Close)
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Server.Close)
	h.URL = h.Server.URL
	return h
}

// Add publishes a repo.
func (h *Hub) Add(r *HubRepo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.repos[r.Type+"/"+strings.ToLower(r.ID)] = r
}

// CDNGets returns the number of full CDN downloads of the file with sha256 hex.
func (h *Hub) CDNGets(sha string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cdn[sha]
}

// Requests returns the hub (not CDN) requests seen.
func (h *Hub) Requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.reqs...)
}

// SHA256 returns the hex sha256 of b.
func SHA256(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// GitSHA1 returns git's blob id of b.
func GitSHA1(b []byte) string {
	s := sha1.New()
	fmt.Fprintf(s, "blob %d\x00", len(b))
	s.Write(b)
	return hex.EncodeToString(s.Sum(nil))
}

func pointer(f HubFile) []byte {
	return []byte(fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", SHA256(f.Data), len(f.Data)))
}

func hubErr(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// lookup finds a repo by type and id; miscased ids are reported so the
// caller can redirect.
func (h *Hub) lookup(typ, id string) (*HubRepo, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repos[typ+"/"+strings.ToLower(id)]
	return r, r != nil && r.ID != id
}

func (h *Hub) commit(r *HubRepo, rev string) (string, bool) {
	if c, ok := r.Refs[rev]; ok {
		return c, true
	}
	if _, ok := r.Commits[rev]; ok {
		return rev, true
	}
	return "", false
}

func (h *Hub) authorized(r *HubRepo, req *http.Request) bool {
	return !r.Gated || req.Header.Get("Authorization") == "Bearer "+h.Token
}

func splitPath(p string) []string {
	raw := strings.Split(strings.Trim(p, "/"), "/")
	for i, s := range raw {
		raw[i], _ = url.PathUnescape(s)
	}
	return raw
}

func (h *Hub) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.reqs = append(h.reqs, r.Method+" "+r.URL.RequestURI())
	h.mu.Unlock()
	segs := splitPath(r.URL.EscapedPath())
	if len(segs) >= 5 && segs[0] == "api" && segs[1] == "resolve-cache" {
		h.serveResolveCache(w, r, segs[2:])
		return
	}
	if len(segs) >= 3 && segs[0] == "api" {
		h.serveAPI(w, r, segs[1:])
		return
	}
	typ := "model"
	if len(segs) > 0 && segs[0] == "datasets" {
		typ, segs = "dataset", segs[1:]
	}
	if len(segs) >= 5 && segs[2] == "resolve" {
		h.serveResolve(w, r, typ, segs[0]+"/"+segs[1], segs[3], strings.Join(segs[4:], "/"))
		return
	}
	h.t.Errorf("fake hub: unexpected request %s %s", r.Method, r.URL)
	hubErr(w, http.StatusNotFound, "", "not found")
}

func (h *Hub) serveAPI(w http.ResponseWriter, r *http.Request, segs []string) {
	typ := map[string]string{"models": "model", "datasets": "dataset"}[segs[0]]
	if typ == "" || len(segs) < 3 {
		hubErr(w, http.StatusNotFound, "", "not found")
		return
	}
	id := segs[1] + "/" + segs[2]
	repo, miscased := h.lookup(typ, id)
	if repo == nil {
		hubErr(w, http.StatusUnauthorized, "RepoNotFound", "Repository Not Found for url: "+r.URL.String()+".")
		return
	}
	if miscased {
		u := *r.URL
		u.Path = strings.Replace(u.Path, id, repo.ID, 1)
		u.RawPath = ""
		w.Header().Set("Location", u.RequestURI()) // relative, keeps the query
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	rest := segs[3:]
	rev := "main"
	switch {
	case len(rest) == 0:
	case rest[0] == "revision" && len(rest) == 2:
		rev = rest[1]
	case rest[0] == "tree" && len(rest) >= 2:
		h.serveTree(w, r, repo, rest[1], strings.Join(rest[2:], "/"))
		return
	case rest[0] == "paths-info" && len(rest) == 2 && r.Method == http.MethodPost:
		h.servePathsInfo(w, r, repo, rest[1])
		return
	default:
		hubErr(w, http.StatusNotFound, "", "not found")
		return
	}
	c, ok := h.commit(repo, rev)
	if !ok {
		hubErr(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	var sib []map[string]any
	for _, p := range sortedPaths(repo.Commits[c]) {
		sib = append(sib, map[string]any{"rfilename": p})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"_id": "abc", "id": repo.ID, "modelId": repo.ID, "sha": c, "siblings": sib, "private": false,
		"gated": map[bool]any{true: "auto", false: false}[repo.Gated], "xetEnabled": true, "downloads": time.Now().UnixNano() % 1000,
	})
}

func (h *Hub) servePathsInfo(w http.ResponseWriter, r *http.Request, repo *HubRepo, rev string) {
	c, ok := h.commit(repo, rev)
	if !ok {
		hubErr(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	var req struct {
		Paths []string `json:"paths"`
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		json.NewDecoder(r.Body).Decode(&req)
	} else {
		r.ParseForm()
		req.Paths = r.PostForm["paths"]
	}
	out := []map[string]any{}
	for _, p := range req.Paths {
		f, ok := repo.Commits[c][p]
		if !ok {
			continue
		}
		e := map[string]any{"type": "file", "size": len(f.Data), "path": p, "oid": GitSHA1(f.Data)}
		if f.LFS {
			ptr := pointer(f)
			e["oid"] = GitSHA1(ptr)
			e["lfs"] = map[string]any{"oid": SHA256(f.Data), "size": len(f.Data), "pointerSize": len(ptr)}
			e["xetHash"] = "deadbeef"
		}
		out = append(out, e)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func sortedPaths(m map[string]HubFile) []string {
	var out []string
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// serveTree pages 2 entries at a time with an absolute Link, like the hub.
func (h *Hub) serveTree(w http.ResponseWriter, r *http.Request, repo *HubRepo, rev, dir string) {
	c, ok := h.commit(repo, rev)
	if !ok {
		hubErr(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	recursive := r.URL.Query().Get("recursive") == "true" || r.URL.Query().Get("recursive") == "1"
	var entries []map[string]any
	dirs := map[string]bool{}
	for _, p := range sortedPaths(repo.Commits[c]) {
		rel := p
		if dir != "" {
			if !strings.HasPrefix(p, dir+"/") {
				continue
			}
			rel = strings.TrimPrefix(p, dir+"/")
		}
		if i := strings.IndexByte(rel, '/'); i >= 0 && !recursive {
			d := rel[:i]
			if dir != "" {
				d = dir + "/" + d
			}
			if !dirs[d] {
				dirs[d] = true
				entries = append(entries, map[string]any{"type": "directory", "oid": GitSHA1([]byte(d)), "size": 0, "path": d})
			}
			continue
		}
		f := repo.Commits[c][p]
		e := map[string]any{"type": "file", "size": len(f.Data), "path": p}
		if f.LFS {
			ptr := pointer(f)
			e["oid"] = GitSHA1(ptr)
			e["lfs"] = map[string]any{"oid": SHA256(f.Data), "size": len(f.Data), "pointerSize": len(ptr)}
			e["xetHash"] = "deadbeef" + SHA256(f.Data)[:16]
		} else {
			e["oid"] = GitSHA1(f.Data)
		}
		entries = append(entries, e)
	}
	cursor, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	end := min(cursor+2, len(entries))
	if cursor > len(entries) {
		cursor = len(entries)
	}
	if end < len(entries) {
		q := r.URL.Query()
		q.Set("cursor", strconv.Itoa(end))
		w.Header().Set("Link", fmt.Sprintf(`<%s%s?%s>; rel="next"`, h.URL, r.URL.EscapedPath(), q.Encode()))
	}
	w.Header().Set("Content-Type", "application/json")
	page := entries[cursor:end]
	if page == nil {
		page = []map[string]any{}
	}
	json.NewEncoder(w).Encode(page)
}

func (h *Hub) sign(sha string, exp int64) string {
	m := hmac.New(sha256.New, h.key)
	fmt.Fprintf(m, "%s:%d", sha, exp)
	return hex.EncodeToString(m.Sum(nil))
}

func (h *Hub) serveResolve(w http.ResponseWriter, r *http.Request, typ, id, rev, p string) {
	repo, miscased := h.lookup(typ, id)
	if repo == nil {
		hubErr(w, http.StatusUnauthorized, "RepoNotFound", "Repository Not Found")
		return
	}
	if miscased {
		u := *r.URL
		u.Path = strings.Replace(u.Path, id, repo.ID, 1)
		u.RawPath = ""
		w.Header().Set("Location", u.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	c, ok := h.commit(repo, rev)
	if !ok {
		hubErr(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	if !h.authorized(repo, r) {
		hubErr(w, http.StatusUnauthorized, "GatedRepo", "Access to model "+repo.ID+" is restricted. You must have access to it and be authenticated to access it.")
		return
	}
	w.Header().Set("X-Repo-Commit", c)
	f, ok := repo.Commits[c][p]
	if !ok {
		hubErr(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	if f.LFS {
		sha := SHA256(f.Data)
		exp := time.Now().Add(3 * time.Second).Unix()
		w.Header().Set("X-Linked-Etag", `"`+sha+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.Data)))
		w.Header().Set("X-Xet-Hash", "deadbeef")
		w.Header().Set("Link", `<`+h.URL+`/api/models/`+repo.ID+`/xet-read-token/`+c+`>; rel="xet-auth"`)
		w.Header().Set("ETag", `"`+GitSHA1(pointer(f))+`"`)
		http.Redirect(w, r, fmt.Sprintf("%s/repos/%s?exp=%d&sig=%s", h.CDN.URL, sha, exp, h.sign(sha, exp)), http.StatusFound)
		return
	}
	if p == "config.json" && r.URL.Query().Get("etag") == "" && r.Method == http.MethodGet {
		// Some resolves go through a relative redirect whose query matters.
		w.Header().Set("Location", fmt.Sprintf("/api/resolve-cache/%ss/%s/%s/%s?etag=%s&x=1", typ, repo.ID, c, p, GitSHA1(f.Data)))
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	h.serveFile(w, r, f)
}

func (h *Hub) serveFile(w http.ResponseWriter, r *http.Request, f HubFile) {
	w.Header().Set("ETag", `"`+GitSHA1(f.Data)+`"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Accept-Ranges", "bytes")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.Data))
}

func (h *Hub) serveResolveCache(w http.ResponseWriter, r *http.Request, segs []string) {
	// /api/resolve-cache/{type}s/{org}/{name}/{commit}/{path}?etag=...
	if r.URL.Query().Get("etag") == "" {
		hubErr(w, http.StatusBadRequest, "", "resolve-cache needs its query (etag)")
		return
	}
	typ := strings.TrimSuffix(segs[0], "s")
	repo, _ := h.lookup(typ, segs[1]+"/"+segs[2])
	if repo == nil || len(segs) < 5 {
		hubErr(w, http.StatusNotFound, "", "not found")
		return
	}
	f, ok := repo.Commits[segs[3]][strings.Join(segs[4:], "/")]
	if !ok {
		hubErr(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	w.Header().Set("X-Repo-Commit", segs[3])
	h.serveFile(w, r, f)
}

func (h *Hub) serveCDN(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		h.t.Errorf("fake CDN got an Authorization header: credentials leaked to another host")
	}
	sha := strings.TrimPrefix(r.URL.Path, "/repos/")
	exp, _ := strconv.ParseInt(r.URL.Query().Get("exp"), 10, 64)
	if !hmac.Equal([]byte(r.URL.Query().Get("sig")), []byte(h.sign(sha, exp))) || time.Now().Unix() > exp {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	var data []byte
	h.mu.Lock()
	for _, repo := range h.repos {
		for _, files := range repo.Commits {
			for _, f := range files {
				if f.LFS && SHA256(f.Data) == sha {
					data = f.Data
				}
			}
		}
	}
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" {
		h.cdn[sha]++
	}
	h.mu.Unlock()
	if data == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+sha+`"`) // the CDN's object ETag is the content's sha256
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}
