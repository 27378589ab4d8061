package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upstreamReg is a minimal OCI registry (read side) whose blob bodies share
// one throttled link: all connections together get at most rate bytes/s, as
// through one WAN uplink. It counts requests and blob bytes sent.
type upstreamReg struct {
	url string
	srv *http.Server

	mu        sync.Mutex
	blobs     map[string]*blobSrc // by digest
	manifests map[string]manifest // "repo:ref" (tag or digest)

	rate      atomic.Int64 // bytes/s; 0 = unthrottled
	pmu       sync.Mutex
	next      time.Time
	blobGets  atomic.Int64
	blobHeads atomic.Int64
	manGets   atomic.Int64
	manHeads  atomic.Int64
	blobBytes atomic.Int64
	lastByte  atomic.Int64 // UnixNano of the last blob body write
}

type blobSrc struct {
	f    *os.File
	size int64
}

type manifest struct {
	mediaType string
	body      []byte
	digest    string
}

func startUpstream() (*upstreamReg, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstreamReg{url: "http://" + ln.Addr().String(), blobs: map[string]*blobSrc{}, manifests: map[string]manifest{}}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

func (u *upstreamReg) close() {
	_ = u.srv.Close()
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, b := range u.blobs {
		b.f.Close()
	}
}

func (u *upstreamReg) addBlob(digest, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	u.mu.Lock()
	u.blobs[digest] = &blobSrc{f: f, size: fi.Size()}
	u.mu.Unlock()
	return nil
}

func (u *upstreamReg) addManifest(repo, tag string, m manifest) {
	u.mu.Lock()
	u.manifests[repo+":"+tag] = m
	u.manifests[repo+":"+m.digest] = m
	u.mu.Unlock()
}

type counters struct{ blobGets, blobHeads, manGets, manHeads, blobBytes int64 }

func (u *upstreamReg) reset() {
	u.blobGets.Store(0)
	u.blobHeads.Store(0)
	u.manGets.Store(0)
	u.manHeads.Store(0)
	u.blobBytes.Store(0)
}

func (u *upstreamReg) counts() counters {
	return counters{u.blobGets.Load(), u.blobHeads.Load(), u.manGets.Load(), u.manHeads.Load(), u.blobBytes.Load()}
}

func (u *upstreamReg) setRate(r int64) { u.rate.Store(r) }

// pace blocks until n more bytes may go out on the shared link.
func (u *upstreamReg) pace(ctx context.Context, n int) error {
	r := u.rate.Load()
	if r <= 0 {
		return nil
	}
	u.pmu.Lock()
	// A little credit for a sleeper that woke late, none for an idle link.
	now := time.Now()
	if floor := now.Add(-10 * time.Millisecond); u.next.Before(floor) {
		u.next = floor
	}
	u.next = u.next.Add(time.Duration(float64(n) / float64(r) * float64(time.Second)))
	at := u.next
	u.pmu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

func (u *upstreamReg) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	segs := strings.Split(rest, "/")
	if !ok || len(segs) < 3 || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		ociError(w, http.StatusNotFound, "UNSUPPORTED", "not here")
		return
	}
	repo, kind, ref := strings.Join(segs[:len(segs)-2], "/"), segs[len(segs)-2], segs[len(segs)-1]
	switch kind {
	case "manifests":
		u.serveManifest(w, r, repo, ref)
	case "blobs":
		u.serveBlob(w, r, ref)
	default:
		ociError(w, http.StatusNotFound, "UNSUPPORTED", "not here")
	}
}

func (u *upstreamReg) serveManifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	if r.Method == http.MethodHead {
		u.manHeads.Add(1)
	} else {
		u.manGets.Add(1)
	}
	u.mu.Lock()
	m, ok := u.manifests[repo+":"+ref]
	u.mu.Unlock()
	if !ok {
		ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
		return
	}
	h := w.Header()
	h.Set("Content-Type", m.mediaType)
	h.Set("Content-Length", strconv.Itoa(len(m.body)))
	h.Set("Docker-Content-Digest", m.digest)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(m.body)
	}
}

func (u *upstreamReg) serveBlob(w http.ResponseWriter, r *http.Request, dgst string) {
	if r.Method == http.MethodHead {
		u.blobHeads.Add(1)
	} else {
		u.blobGets.Add(1)
	}
	u.mu.Lock()
	b, ok := u.blobs[dgst]
	u.mu.Unlock()
	if !ok {
		ociError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown")
		return
	}
	h := w.Header()
	start, end := int64(0), b.size-1
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" {
		spec, _ := strings.CutPrefix(rg, "bytes=")
		a, e, _ := strings.Cut(spec, "-")
		s, err := strconv.ParseInt(a, 10, 64)
		if err != nil || s >= b.size || s < 0 {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", b.size))
			ociError(w, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", "bad range")
			return
		}
		start = s
		if e != "" {
			if v, err := strconv.ParseInt(e, 10, 64); err == nil && v < end {
				end = v
			}
		}
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, b.size))
	}
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	h.Set("Docker-Content-Digest", dgst)
	h.Set("Accept-Ranges", "bytes")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	const chunk = 256 << 10
	buf := make([]byte, chunk)
	for off := start; off <= end; {
		n := int(min(int64(chunk), end-off+1))
		if err := u.pace(r.Context(), n); err != nil {
			return
		}
		m, err := b.f.ReadAt(buf[:n], off)
		if m > 0 {
			k, werr := w.Write(buf[:m])
			u.blobBytes.Add(int64(k))
			u.lastByte.Store(time.Now().UnixNano())
			if werr != nil {
				return
			}
		}
		if err != nil && m < n {
			panic(http.ErrAbortHandler)
		}
		off += int64(m)
	}
}
