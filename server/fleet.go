package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/clowder-dev/clowder/cas/s3store"
)

// handleFleet serves another replica of a shared s3 store the blob this
// replica is filling (or holds), from the offset in "Range: bytes=N-". The
// replicas sign these requests with a key derived from the bucket
// credentials they share; nobody else gets an answer.
func (s *Server) handleFleet(w http.ResponseWriter, r *http.Request) {
	if len(s.opts.FleetKey) == 0 {
		writeError(w, r, errorf(http.StatusNotFound, CodeUnsupported, "no such endpoint: "+r.URL.Path))
		return
	}
	d := digest.Digest(strings.TrimPrefix(r.URL.Path, s3store.FleetPath))
	if !s3store.CheckFleetToken(s.opts.FleetKey, d, r.Header.Get(s3store.FleetHeader)) {
		writeError(w, r, errorf(http.StatusUnauthorized, CodeUnauthorized, "fleet requests are signed by a replica of the same bucket"))
		return
	}
	off := int64(0)
	if rg := r.Header.Get("Range"); rg != "" {
		v, ok := strings.CutPrefix(rg, "bytes=")
		v, ok2 := strings.CutSuffix(v, "-")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || !ok2 || err != nil || n < 0 {
			writeError(w, r, errorf(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "fleet reads take Range: bytes=N-"))
			return
		}
		off = n
	}
	body, total, err := s.proxy.FleetBlob(r.Context(), d, off)
	if err != nil {
		writeError(w, r, err)
		return
	}
	defer body.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(s3store.SizeHeader, strconv.FormatInt(total, 10))
	if total >= 0 {
		h.Set("Content-Length", strconv.FormatInt(total-off, 10))
	}
	status := http.StatusOK
	if off > 0 {
		status = http.StatusPartialContent
	}
	info(r).cache = "fleet"
	w.WriteHeader(status)
	if err := copyFollowing(w, body); err != nil && r.Context().Err() == nil {
		// The fill failed mid-body: the follower must see a broken transfer.
		panic(http.ErrAbortHandler)
	}
}
