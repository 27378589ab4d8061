package testutil

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// BlobServer is a fake upstream for faults no real registry shows on
// loopback: it serves one blob under /v2/<any>/blobs/<digest>, throttled,
// and can reset, stall or corrupt the first response at an offset. It fails
// the test on any request it does not expect.
type BlobServer struct {
	t      testing.TB
	Server *httptest.Server
	URL    string
	Host   string
	Data   []byte
	Digest digest.Digest

	// Rate throttles the body (bytes per second); 0 is unthrottled. Set
	// it before the first request; SetRate changes it while serving.
	Rate int
	// NoRange makes the server ignore Range (always 200, whole body).
	NoRange bool
	// ResetAt, StallAt, CorruptAt (> 0) apply to the first GET only.
	ResetAt, StallAt, CorruptAt int64
	// Stall is how long a stall lasts.
	Stall time.Duration

	mu     sync.Mutex
	gets   int
	heads  int
	ranges []string
}

// NewBlobServer serves size random bytes.
func NewBlobServer(t testing.TB, size int) *BlobServer {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	b := &BlobServer{t: t, Data: data, Digest: digest.FromBytes(data), Stall: 5 * time.Second}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.Server.Close)
	b.URL = b.Server.URL
	u, _ := url.Parse(b.URL)
	b.Host = u.Host
	return b
}

// SetRate changes Rate while requests may be running.
func (b *BlobServer) SetRate(bytesPerSecond int) {
	b.mu.Lock()
	b.Rate = bytesPerSecond
	b.mu.Unlock()
}

func (b *BlobServer) rate() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Rate
}

// Gets returns the number of blob GETs and the Range headers they carried.
func (b *BlobServer) Gets() (int, []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gets, append([]string(nil), b.ranges...)
}

func (b *BlobServer) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v2/") || !strings.HasSuffix(r.URL.Path, "/blobs/"+b.Digest.String()) {
		b.t.Errorf("BlobServer: unexpected request %s %s", r.Method, r.URL)
		http.NotFound(w, r)
		return
	}
	b.mu.Lock()
	first := b.gets == 0
	if r.Method == http.MethodGet {
		b.gets++
		b.ranges = append(b.ranges, r.Header.Get("Range"))
	} else {
		b.heads++
	}
	b.mu.Unlock()
	size := int64(len(b.Data))
	start, end := int64(0), size-1
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !b.NoRange {
		spec := strings.TrimPrefix(rg, "bytes=")
		a, e, _ := strings.Cut(spec, "-")
		s, err := strconv.ParseInt(a, 10, 64)
		if err != nil || s >= size {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = s
		if e != "" {
			if v, err := strconv.ParseInt(e, 10, 64); err == nil && v < end {
				end = v
			}
		}
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	}
	w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	w.Header().Set("Docker-Content-Digest", b.Digest.String())
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	const chunk = 32 << 10
	fl, _ := w.(http.Flusher)
	began := time.Now()
	sent := 0
	for off := start; off <= end; {
		n := min(int64(chunk), end-off+1)
		p := b.Data[off : off+n]
		if first && b.ResetAt > 0 && off+n > b.ResetAt && off <= b.ResetAt {
			p = p[:b.ResetAt-off]
			_, _ = w.Write(p)
			fl.Flush()
			panic(http.ErrAbortHandler) // reset the connection
		}
		if first && b.StallAt > 0 && off+n > b.StallAt && off <= b.StallAt {
			_, _ = w.Write(p[:b.StallAt-off])
			fl.Flush()
			select {
			case <-time.After(b.Stall):
			case <-r.Context().Done():
			}
			return
		}
		if first && b.CorruptAt > 0 && off+n > b.CorruptAt && off <= b.CorruptAt {
			q := append([]byte(nil), p...)
			q[b.CorruptAt-off] ^= 0xff
			p = q
		}
		if _, err := w.Write(p); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
		off += n
		sent += int(n)
		if rate := b.rate(); rate > 0 {
			want := time.Duration(float64(sent) / float64(rate) * float64(time.Second))
			if d := want - time.Since(began); d > 0 {
				time.Sleep(d)
			}
		}
	}
}
