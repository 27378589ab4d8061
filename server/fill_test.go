package server_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/proxy"
)

// get fetches path from the proxy and reports the time to the first body
// byte and the whole body.
func (e *env) timedGet(path, rng string) (status int, ttfb time.Duration, b []byte, err error) {
	req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, nil, err
	}
	defer resp.Body.Close()
	first := make([]byte, 1)
	n, err := io.ReadFull(resp.Body, first)
	ttfb = time.Since(start)
	if err != nil {
		return resp.StatusCode, ttfb, first[:n], err
	}
	rest, err := io.ReadAll(resp.Body)
	return resp.StatusCode, ttfb, append(first, rest...), err
}

// 64 clients ask for one cold blob through the OCI route while ollama-style
// ranged parts arrive, from an upstream throttled so the fill takes seconds:
// one upstream GET, every byte right, every first byte long before the end.
func TestColdBlobFanOutStreamsToAll(t *testing.T) {
	const size = 6 << 20
	up := testutil.NewBlobServer(t, size)
	up.Rate = 3 << 20 // ~2 s fill
	e := newEnv(t, upSpec{name: "up", url: up.URL})
	path := "/v2/up/models/m/blobs/" + up.Digest.String()

	type result struct {
		rng    string
		status int
		ttfb   time.Duration
		ok     bool
		err    error
	}
	const clients = 64
	results := make([]result, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := ""
			var want []byte = up.Data
			if i%4 == 1 { // ollama-style parts, spread over the blob
				a := int64(rand.IntN(size - 1))
				b := min(a+int64(rand.IntN(1<<20)), size-1)
				rng = fmt.Sprintf("bytes=%d-%d", a, b)
				want = up.Data[a : b+1]
			}
			if i == clients-1 {
				time.Sleep(500 * time.Millisecond) // a late joiner
			}
			status, ttfb, got, err := e.timedGet(path, rng)
			results[i] = result{rng: rng, status: status, ttfb: ttfb, ok: bytes.Equal(got, want), err: err}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	if gets, _ := up.Gets(); gets != 1 {
		t.Errorf("upstream GETs = %d, want 1", gets)
	}
	if total < time.Second {
		t.Fatalf("fill took %v; the throttle did not work", total)
	}
	var worst time.Duration
	for i, r := range results {
		if r.err != nil || !r.ok {
			t.Errorf("client %d (range %q): status %d, bytes right %v, err %v", i, r.rng, r.status, r.ok, r.err)
		}
		wantStatus := 200
		if r.rng != "" {
			wantStatus = 206
		}
		if r.status != wantStatus {
			t.Errorf("client %d (range %q): status %d, want %d", i, r.rng, r.status, wantStatus)
		}
		// A ranged part waits only for its own bytes; whole-blob clients and
		// parts at the start must not wait for the fill to finish.
		if r.rng == "" && r.ttfb > worst {
			worst = r.ttfb
		}
	}
	if worst > total/2 {
		t.Errorf("slowest first byte for a whole-blob client %v, fill took %v: clients waited for the fill", worst, total)
	}
	if files := e.waitBlobs(1); len(files) != 1 {
		t.Errorf("blob files = %v, want exactly the one blob", files)
	}
	if ents, _ := os.ReadDir(e.root + "/.clowder/ingest"); len(ents) != 0 {
		t.Errorf("ingest files left: %d", len(ents))
	}
}

// A client that hangs up does not cancel the fill others (and the cache) want.
func TestClientHangupDoesNotCancelFill(t *testing.T) {
	up := testutil.NewBlobServer(t, 2<<20)
	up.Rate = 4 << 20
	e := newEnv(t, upSpec{name: "up", url: up.URL})
	path := "/v2/up/x/blobs/" + up.Digest.String()
	resp := e.do("GET", path)
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // hang up, like ollama's probe GET
	status, _, got, err := e.timedGet(path, "")
	if err != nil || status != 200 || !bytes.Equal(got, up.Data) {
		t.Fatalf("second client: %d, %v, bytes right %v", status, err, bytes.Equal(got, up.Data))
	}
	if gets, _ := up.Gets(); gets != 1 {
		t.Errorf("upstream GETs = %d, want 1", gets)
	}
}

func TestUpstreamFaultsMidStream(t *testing.T) {
	const size = 1 << 20
	cases := []struct {
		name       string
		setup      func(b *testutil.BlobServer)
		wantOK     bool
		wantGets   int
		wantResume bool
	}{
		{"reset at 40% resumes with Range", func(b *testutil.BlobServer) { b.ResetAt = size * 4 / 10 }, true, 2, true},
		{"stall at 40% resumes after idle timeout", func(b *testutil.BlobServer) { b.StallAt = size * 4 / 10 }, true, 2, true},
		{"reset without Range support restarts", func(b *testutil.BlobServer) { b.ResetAt = size * 4 / 10; b.NoRange = true }, true, 2, false},
		{"wrong bytes are never committed", func(b *testutil.BlobServer) { b.CorruptAt = size / 2 }, false, 1, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := testutil.NewBlobServer(t, size)
			c.setup(up)
			e := newEnv(t, upSpec{name: "up", url: up.URL})
			e.filler.Idle = 300 * time.Millisecond
			req, _ := http.NewRequest("GET", e.srv.URL+"/v2/up/f/blobs/"+up.Digest.String(), nil)
			resp, err := http.DefaultClient.Do(req)
			var got []byte
			switch {
			case err != nil && !c.wantOK:
				// The connection was aborted before the headers: visible.
			case err != nil:
				t.Fatal(err)
			case resp.StatusCode == http.StatusBadGateway && !c.wantOK:
				// The fill failed before the answer started: a clean 502.
				resp.Body.Close()
				err = fmt.Errorf("502")
			default:
				if resp.StatusCode != 200 || resp.ContentLength != size || resp.Header.Get("Docker-Content-Digest") != up.Digest.String() {
					t.Fatalf("headers: %d len %d %v", resp.StatusCode, resp.ContentLength, resp.Header)
				}
				got, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			gets, ranges := up.Gets()
			if c.wantOK {
				if err != nil || !bytes.Equal(got, up.Data) {
					t.Fatalf("body: %d bytes, err %v, right %v", len(got), err, bytes.Equal(got, up.Data))
				}
				if files := e.waitBlobs(1); len(files) != 1 {
					t.Errorf("blob not committed: %v", files)
				}
			} else {
				if err == nil {
					t.Fatalf("corrupt upstream: the client got a clean %d-byte body, want a broken transfer", len(got))
				}
				time.Sleep(100 * time.Millisecond)
				if files := e.blobFiles(); len(files) != 0 {
					t.Errorf("a wrong blob was committed: %v", files)
				}
			}
			if gets != c.wantGets {
				t.Errorf("upstream GETs = %d (%q), want %d", gets, ranges, c.wantGets)
			}
			if c.wantResume && (len(ranges) < 2 || !strings.HasPrefix(ranges[1], "bytes=")) {
				t.Errorf("second GET Range = %q, want a resume", ranges)
			}
			time.Sleep(50 * time.Millisecond)
			if ents, _ := os.ReadDir(e.root + "/.clowder/ingest"); len(ents) != 0 {
				t.Errorf("ingest files left: %d", len(ents))
			}
		})
	}
}

func TestMissingBlobFileIsRefetched(t *testing.T) {
	up := testutil.NewBlobServer(t, 100000)
	e := newEnv(t, upSpec{name: "up", url: up.URL})
	path := "/v2/up/f/blobs/" + up.Digest.String()
	if status, _, got, err := e.timedGet(path, ""); err != nil || status != 200 || !bytes.Equal(got, up.Data) {
		t.Fatalf("first GET: %d %v", status, err)
	}
	files := e.waitBlobs(1)
	if len(files) != 1 {
		t.Fatalf("blob files = %v", files)
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	if status, _, got, err := e.timedGet(path, ""); err != nil || status != 200 || !bytes.Equal(got, up.Data) {
		t.Fatalf("GET after the file vanished: %d %v", status, err)
	}
	want := 2
	if onS3() {
		want = 1 // the local file was only a copy: the bucket still holds the blob
	}
	if gets, _ := up.Gets(); gets != want {
		t.Errorf("upstream GETs = %d, want %d", gets, want)
	}
}

// A range far past the write point of a running fill is served by its own
// ranged upstream request, not after the fill reaches it, and without a
// second full fetch.
func TestFarRangeDuringFill(t *testing.T) {
	const size = 8 << 20
	up := testutil.NewBlobServer(t, size)
	up.Rate = 2 << 20 // 4 s
	e := newEnvWith(t, proxy.Options{FarRange: 1 << 20, FarWait: time.Second}, upSpec{name: "up", url: up.URL})
	path := "/v2/up/f/blobs/" + up.Digest.String()
	go e.timedGet(path, "")
	time.Sleep(700 * time.Millisecond) // enough history to estimate the fill's rate
	rng := fmt.Sprintf("bytes=%d-%d", size-1000, size-1)
	status, ttfb, got, err := e.timedGet(path, rng)
	if err != nil || status != 206 || !bytes.Equal(got, up.Data[size-1000:]) {
		t.Fatalf("far range: %d %v", status, err)
	}
	if ttfb > 2*time.Second {
		t.Errorf("far range first byte after %v: it waited for the fill", ttfb)
	}
	gets, ranges := up.Gets()
	full := 0
	for _, r := range ranges {
		if r == "" {
			full++
		}
	}
	if full != 1 {
		t.Errorf("full upstream GETs = %d (%v), want 1", full, ranges)
	}
	if gets != 2 {
		t.Errorf("upstream GETs = %d (%v), want 2 (the fill and one ranged)", gets, ranges)
	}
}
