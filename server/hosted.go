package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/hosted"
	"github.com/clowder-dev/clowder/upstream"
)

// OCI error codes only the push side uses.
const (
	CodeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	CodeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
)

// classifyHosted maps the hosted store's errors; classify asks it first,
// so that, say, a digest mismatch of a client's upload is the client's
// DIGEST_INVALID and not an upstream's 502.
func classifyHosted(err error) *Error {
	switch {
	case errors.Is(err, hosted.ErrUploadTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, CodeSizeInvalid, err.Error())
	case errors.Is(err, hosted.ErrRangeInvalid):
		return errorf(http.StatusRequestedRangeNotSatisfiable, CodeBlobUploadInvalid, err.Error())
	case errors.Is(err, hosted.ErrUploadUnknown):
		return errorf(http.StatusNotFound, CodeBlobUploadUnknown, err.Error())
	case errors.Is(err, hosted.ErrUploadInvalid):
		return errorf(http.StatusBadRequest, CodeBlobUploadInvalid, err.Error())
	case errors.Is(err, hosted.ErrDigestInvalid):
		return errorf(http.StatusBadRequest, CodeDigestInvalid, err.Error())
	case errors.Is(err, hosted.ErrSizeInvalid):
		return errorf(http.StatusBadRequest, CodeSizeInvalid, err.Error())
	case errors.Is(err, hosted.ErrManifestTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, CodeManifestInvalid, err.Error())
	case errors.Is(err, hosted.ErrManifestBlobUnknown):
		return errorf(http.StatusBadRequest, CodeManifestBlobUnknown, err.Error())
	case errors.Is(err, hosted.ErrManifestInvalid):
		return errorf(http.StatusBadRequest, CodeManifestInvalid, err.Error())
	case errors.Is(err, hosted.ErrManifestUnknown):
		return errorf(http.StatusNotFound, CodeManifestUnknown, err.Error())
	case errors.Is(err, hosted.ErrBlobUnknown):
		return errorf(http.StatusNotFound, CodeBlobUnknown, err.Error())
	case errors.Is(err, hosted.ErrNameUnknown):
		return errorf(http.StatusNotFound, CodeNameUnknown, err.Error())
	}
	return nil
}

// hostedPath splits an OCI path like ociPath does, and also the upload
// endpoints /v2/<name>/blobs/uploads/ and /v2/<name>/blobs/uploads/<id>
// (kind "uploads", ref the session id or "").
func hostedPath(p string) (name, kind, ref string, ok bool) {
	rest, found := strings.CutPrefix(p, "/v2/")
	if !found {
		return "", "", "", false
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	switch {
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		return strings.Join(segs[:n-3], "/"), "uploads", segs[n-1], true
	case n >= 3 && segs[n-2] == "blobs" && segs[n-1] == "uploads":
		return strings.Join(segs[:n-2], "/"), "uploads", "", true
	}
	return ociPath(p)
}

// serveHosted answers a request for a hosted repository (every method) and
// reports whether it did. Requests carrying ?ns= name a repository of
// another registry (containerd's mirror parameter) and are not hosted.
func (s *Server) serveHosted(w http.ResponseWriter, r *http.Request) bool {
	h := s.opts.Hosted
	if h == nil && r.Method != http.MethodGet && r.Method != http.MethodHead && !r.URL.Query().Has("ns") {
		// No hosted repositories here (the s3 backend's replicas do not
		// share the blob links they need): say so instead of a bare 404.
		if _, _, _, ok := hostedPath(r.URL.Path); ok {
			writeError(w, r, errorf(http.StatusMethodNotAllowed, CodeUnsupported, "this Clowder accepts no pushes: hosted repositories need storage.type local"))
			return true
		}
	}
	if h == nil || r.URL.Query().Has("ns") {
		return false
	}
	name, kind, ref, ok := hostedPath(r.URL.Path)
	if !ok || !h.Owns(name) {
		return false
	}
	info(r).name = name
	info(r).upstream = "hosted"
	if !s.authorize(w, r, actionOf(r.Method), name, name) {
		return true
	}
	if a, q := s.opts.Auth, r.URL.Query(); a != nil && q.Has("mount") {
		// Mount only what the client may read in the source repository;
		// otherwise the POST starts an ordinary upload. With authentication
		// on, a mount without from (which could reach any repository) is
		// always an ordinary upload.
		if id := identityOf(r); id == nil || q.Get("from") == "" || !a.allowed(*id, "pull", q.Get("from")) {
			q.Del("mount")
			q.Del("from")
			r.URL.RawQuery = q.Encode()
		}
	}
	allow := func(methods ...string) bool {
		for _, m := range methods {
			if r.Method == m {
				return true
			}
		}
		w.Header().Set("Allow", strings.Join(methods, ", "))
		writeError(w, r, errorf(http.StatusMethodNotAllowed, CodeUnsupported, fmt.Sprintf("%s is not supported on %s", r.Method, r.URL.Path)))
		return false
	}
	switch kind {
	case "manifests":
		if allow(http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete) {
			s.hostedManifest(w, r, h, name, ref)
		}
	case "blobs":
		if allow(http.MethodGet, http.MethodHead, http.MethodDelete) {
			s.hostedBlob(w, r, h, name, digest.Digest(ref))
		}
	case "uploads":
		if ref == "" {
			if allow(http.MethodPost) {
				s.hostedUploadStart(w, r, h, name)
			}
		} else if allow(http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete) {
			s.hostedUpload(w, r, h, name, ref)
		}
	case "tags":
		if allow(http.MethodGet, http.MethodHead) {
			s.hostedTags(w, r, h, name)
		}
	case "referrers":
		if allow(http.MethodGet, http.MethodHead) {
			s.hostedReferrers(w, r, h, name, digest.Digest(ref))
		}
	}
	return true
}

func (s *Server) hostedManifest(w http.ResponseWriter, r *http.Request, h *hosted.Store, name, ref string) {
	ctx := r.Context()
	switch r.Method {
	case http.MethodPut:
		if r.ContentLength > hosted.MaxManifestSize {
			writeError(w, r, fmt.Errorf("%d bytes, limit %d: %w", r.ContentLength, hosted.MaxManifestSize, hosted.ErrManifestTooLarge))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, hosted.MaxManifestSize+1))
		if err != nil {
			writeError(w, r, fmt.Errorf("reading manifest: %w: %v", hosted.ErrManifestInvalid, err))
			return
		}
		m, err := h.PutManifest(ctx, name, ref, r.Header.Get("Content-Type"), body, r.URL.Query()["tag"])
		if err != nil {
			writeError(w, r, err)
			return
		}
		hd := w.Header()
		hd.Set("Location", "/v2/"+name+"/manifests/"+m.Desc.Digest.String())
		hd.Set("Docker-Content-Digest", m.Desc.Digest.String())
		if m.Subject != nil {
			hd.Set("OCI-Subject", m.Subject.Digest.String())
		}
		if ref == m.Desc.Digest.String() && len(m.Tags) > 0 {
			hd.Set("OCI-Tag", strings.Join(m.Tags, ", ")) // the ?tag= parameters accepted
		}
		hd.Set("Content-Length", "0")
		w.WriteHeader(http.StatusCreated)
	case http.MethodDelete:
		if err := h.DeleteManifest(ctx, name, ref); err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
	default:
		m, err := h.GetManifest(ctx, name, ref)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeManifest(w, r, m.Desc, m.Body)
	}
}

func (s *Server) hostedBlob(w http.ResponseWriter, r *http.Request, h *hosted.Store, name string, d digest.Digest) {
	ctx := r.Context()
	if r.Method == http.MethodDelete {
		if err := h.DeleteBlob(ctx, name, d); err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
		return
	}
	f, err := h.OpenBlob(ctx, name, d)
	if err != nil {
		writeError(w, r, err)
		return
	}
	size := f.Size()
	f.Close()
	// The proxy and the hosted store share one layout: the proxy's held-blob
	// path serves it (ranges, zero-copy). Should the bytes vanish in between
	// (a repair), there is nothing to fetch them from.
	b, err := s.proxy.BlobFrom(ctx, ocispec.Descriptor{Digest: d, Size: size}, func(context.Context, int64) (io.ReadCloser, int64, int64, error) {
		return nil, 0, 0, fmt.Errorf("%s in %s: %w", d, name, upstream.ErrNotFound)
	})
	if err != nil {
		writeError(w, r, err)
		return
	}
	defer b.Close()
	info(r).cache = cacheState(b.Hit, false)
	serveBlob(w, r, b, "/v2/"+name+"/blobs/"+d.String())
}

// blobCreated answers a finished upload or mount.
func blobCreated(w http.ResponseWriter, name string, d digest.Digest) {
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+d.String())
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// uploadAccepted answers an open upload session with where to continue.
func uploadAccepted(w http.ResponseWriter, u hosted.Upload, status int) {
	end := u.Size - 1
	if end < 0 {
		end = 0 // as the CNCF distribution registry: "0-0" for an empty upload
	}
	w.Header().Set("Location", "/v2/"+u.Repo+"/blobs/uploads/"+u.ID)
	w.Header().Set("Range", fmt.Sprintf("0-%d", end))
	w.Header().Set("Docker-Upload-UUID", u.ID)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
}

// hostedUploadStart is POST /v2/<name>/blobs/uploads/: a mount, a
// monolithic upload (?digest=), or a new session.
func (s *Server) hostedUploadStart(w http.ResponseWriter, r *http.Request, h *hosted.Store, name string) {
	ctx := r.Context()
	q := r.URL.Query()
	if alg := q.Get("digest-algorithm"); alg != "" && alg != string(digest.SHA256) && alg != string(digest.SHA512) {
		writeError(w, r, errorf(http.StatusBadRequest, CodeUnsupported, fmt.Sprintf("digest-algorithm %q: only sha256 and sha512 are supported", alg)))
		return
	}
	if q.Has("mount") {
		d := digest.Digest(q.Get("mount"))
		desc, err := h.Mount(ctx, name, q.Get("from"), d)
		if err == nil {
			blobCreated(w, name, desc.Digest)
			return
		}
		if !errors.Is(err, hosted.ErrBlobUnknown) {
			writeError(w, r, err)
			return
		}
		// Not mountable: the spec's answer is an ordinary upload session.
	}
	if q.Has("digest") {
		desc, err := h.PutBlob(ctx, name, digest.Digest(q.Get("digest")), r.ContentLength, r.Body)
		if err != nil {
			writeError(w, r, err)
			return
		}
		blobCreated(w, name, desc.Digest)
		return
	}
	u, err := h.StartUpload(ctx, name)
	if err != nil {
		writeError(w, r, err)
		return
	}
	uploadAccepted(w, u, http.StatusAccepted)
}

// chunkRange reads the Content-Range of a PATCH or closing PUT: start is -1
// without one; length is the chunk's length (from the range, else
// Content-Length) or -1.
func chunkRange(r *http.Request) (start, length int64, err error) {
	start, length = -1, r.ContentLength
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return start, length, nil
	}
	spec := strings.TrimPrefix(strings.TrimSpace(cr), "bytes ")
	a, b, ok := strings.Cut(spec, "-")
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(strings.TrimSuffix(b, "/*"), 10, 64)
	if !ok || err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, fmt.Errorf("Content-Range %q is not <first>-<last>: %w", cr, hosted.ErrUploadInvalid)
	}
	n := last - first + 1
	if r.ContentLength >= 0 && r.ContentLength != n {
		return 0, 0, fmt.Errorf("Content-Range %q is %d bytes, Content-Length %d: %w", cr, n, r.ContentLength, hosted.ErrSizeInvalid)
	}
	return first, n, nil
}

// hostedUpload is GET, PATCH, PUT and DELETE of an upload session.
func (s *Server) hostedUpload(w http.ResponseWriter, r *http.Request, h *hosted.Store, name, id string) {
	ctx := r.Context()
	fail := func(err error) {
		var re *hosted.RangeError
		if errors.As(err, &re) {
			// Tell the client where the upload stands, as a GET would.
			w.Header().Set("Location", "/v2/"+re.Upload.Repo+"/blobs/uploads/"+re.Upload.ID)
			w.Header().Set("Range", fmt.Sprintf("0-%d", max(re.Upload.Size-1, 0)))
			w.Header().Set("Docker-Upload-UUID", re.Upload.ID)
		}
		writeError(w, r, err)
	}
	switch r.Method {
	case http.MethodGet:
		u, err := h.UploadStatus(ctx, name, id)
		if err != nil {
			fail(err)
			return
		}
		uploadAccepted(w, u, http.StatusNoContent)
	case http.MethodDelete:
		if err := h.CancelUpload(ctx, name, id); err != nil {
			fail(err)
			return
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		start, length, err := chunkRange(r)
		if err != nil {
			fail(err)
			return
		}
		u, err := h.AppendUpload(ctx, name, id, start, length, r.Body)
		if err != nil {
			fail(err)
			return
		}
		uploadAccepted(w, u, http.StatusAccepted)
	case http.MethodPut:
		dg := r.URL.Query().Get("digest")
		if dg == "" {
			fail(errorf(http.StatusBadRequest, CodeDigestInvalid, "the closing PUT of an upload needs ?digest=<digest of the whole blob>"))
			return
		}
		start, length, err := chunkRange(r)
		if err != nil {
			fail(err)
			return
		}
		desc, err := h.FinishUpload(ctx, name, id, digest.Digest(dg), start, length, r.Body)
		if err != nil {
			fail(err)
			return
		}
		blobCreated(w, name, desc.Digest)
	}
}

// pageParams reads n (-1 when absent) and last.
func pageParams(w http.ResponseWriter, r *http.Request) (n int, last string, ok bool) {
	q := r.URL.Query()
	n = -1
	if v := q.Get("n"); v != "" || q.Has("n") {
		k, err := strconv.Atoi(v)
		if err != nil || k < 0 {
			writeError(w, r, errorf(http.StatusBadRequest, CodePaginationInvalid, fmt.Sprintf("n=%q is not a non-negative integer", v)))
			return 0, "", false
		}
		n = min(k, maxTagsPage)
	}
	return n, q.Get("last"), true
}

// page returns the entries of sorted all after last, at most n (n < 0: all),
// and sets a Link to the next page on path when there is one.
func page(w http.ResponseWriter, all []string, n int, last, path string) []string {
	out := all
	if last != "" {
		i := 0
		for i < len(all) && all[i] <= last {
			i++
		}
		out = all[i:]
	}
	if n >= 0 && len(out) > n {
		out = out[:n]
		if n > 0 {
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {out[len(out)-1]}}
			w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, next.Encode()))
		}
	}
	return out
}

func (s *Server) hostedTags(w http.ResponseWriter, r *http.Request, h *hosted.Store, name string) {
	n, last, ok := pageParams(w, r)
	if !ok {
		return
	}
	tags, err := h.Tags(r.Context(), name)
	if err != nil {
		writeError(w, r, err)
		return
	}
	tags = page(w, tags, n, last, "/v2/"+name+"/tags/list")
	writeJSON(w, r, "application/json", map[string]any{"name": name, "tags": tags})
}

func (s *Server) hostedReferrers(w http.ResponseWriter, r *http.Request, h *hosted.Store, name string, d digest.Digest) {
	at := r.URL.Query().Get("artifactType")
	descs, err := h.Referrers(r.Context(), name, d, at)
	if err != nil {
		writeError(w, r, err)
		return
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	idx.SchemaVersion = 2
	if at != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeJSON(w, r, ocispec.MediaTypeImageIndex, idx)
}

// handleCatalog is GET /v2/_catalog: the hosted repositories (a pull-through
// cache cannot list its upstreams' repositories).
func (s *Server) handleCatalog(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r, "pull", "_catalog", "") {
		return
	}
	h := s.opts.Hosted
	if h == nil {
		writeError(w, r, errorf(http.StatusNotFound, CodeUnsupported, "no hosted repositories: the catalog is empty"))
		return
	}
	n, last, ok := pageParams(w, r)
	if !ok {
		return
	}
	repos, err := h.Repositories(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	repos = page(w, repos, n, last, "/v2/_catalog")
	writeJSON(w, r, "application/json", map[string]any{"repositories": repos})
}
