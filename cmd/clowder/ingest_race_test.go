package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/clowder-dev/clowder/cas"
)

// Every clowder subcommand opens the root with cas.OpenLayout, which removes
// "stale" ingest files: those it can flock. clowder serve's fills create
// their ingest file (O_CREATE|O_EXCL) and flock it in a second step, so a
// subcommand started in between (clowder gc, ls, pull, verify, export on a
// serving root: all documented as safe) removes a live fill's file, or holds
// the lock at that moment: the fill fails and the client gets a 500
// ("open .clowder/ingest/...: no such file or directory", "ingest lock:
// resource temporarily unavailable"). One subcommand rarely hits the
// window; this test opens the root in a loop (what each subcommand does at
// start) while clowder serve fills 600 small blobs, and wants every GET to
// succeed.
func TestOpeningServingRootKeepsFills(t *testing.T) {
	blobs := map[string][]byte{}
	var keys []string
	for range 600 {
		b := make([]byte, 512)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(b).String()
		blobs[d] = b
		keys = append(keys, d)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := blobs[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	}))
	t.Cleanup(up.Close)
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: up, url: '%s'}\n", up.URL))
	root := t.TempDir()
	p := startServe(t, cfg, root)

	stop := make(chan struct{})
	var opens atomic.Int64
	var openers sync.WaitGroup
	for range 2 {
		openers.Add(1)
		go func() {
			defer openers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := cas.OpenLayout(root); err == nil {
					opens.Add(1)
				}
			}
		}()
	}
	var (
		mu     sync.Mutex
		failed []string
	)
	ch := make(chan string)
	var clients sync.WaitGroup
	for range 8 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for d := range ch {
				resp, err := pullClient.Get("http://" + p.addr + "/v2/up/r/blobs/" + d)
				var b []byte
				code := 0
				if err == nil {
					code = resp.StatusCode
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err != nil || code != 200 || string(b) != string(blobs[d]) {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("GET blob %s = %d %v %.160s", d, code, err, b))
					mu.Unlock()
				}
			}
		}()
	}
	for _, d := range keys {
		ch <- d
	}
	close(ch)
	clients.Wait()
	close(stop)
	openers.Wait()
	if len(failed) > 0 {
		t.Errorf("%d of %d blob GETs failed while the root was opened %d times, want 0; first:\n%s", len(failed), len(keys), opens.Load(), strings.Join(failed[:min(3, len(failed))], "\n"))
	}
}
