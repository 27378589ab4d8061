package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Accept list as containerd sends it.
const manifestAccept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression:  true,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		IdleConnTimeout:     30 * time.Second,
		ReadBufferSize:      64 << 10,
		ForceAttemptHTTP2:   false,
	}}
}

type getResult struct {
	bytes  int64
	ttfb   time.Duration // to the first body byte
	penult time.Duration // to all but the last byte (Clowder holds the last one until the blob is verified and committed)
	total  time.Duration
	digest string // when hashing
	err    error
}

// getBlob GETs url and reads the body into a 1 MiB buffer, discarding it.
// Times count from start (a shared instant for fan-out clients).
func getBlob(ctx context.Context, c *http.Client, url string, start time.Time, want int64, hashIt bool) getResult {
	var res getResult
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		res.err = err
		return res
	}
	resp, err := c.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		res.err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
		return res
	}
	var h hash.Hash
	if hashIt {
		h = sha256.New()
	}
	buf := make([]byte, 1<<20)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if res.bytes == 0 {
				res.ttfb = time.Since(start)
			}
			res.bytes += int64(n)
			if res.penult == 0 && want > 0 && res.bytes >= want-1 {
				res.penult = time.Since(start)
			}
			if h != nil {
				h.Write(buf[:n])
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			break
		}
	}
	res.total = time.Since(start)
	if h != nil {
		res.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	if res.err == nil && want >= 0 && res.bytes != want {
		res.err = fmt.Errorf("GET %s: got %d bytes, want %d", url, res.bytes, want)
	}
	return res
}

// parallelGet runs n clients GETting url at once and returns each result
// and the wall time until the last one ended.
func parallelGet(ctx context.Context, url string, n int, want int64, hashIt bool) ([]getResult, time.Duration) {
	c := newClient(n)
	defer c.CloseIdleConnections()
	res := make([]getResult, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = getBlob(ctx, c, url, start, want, hashIt)
		}()
	}
	wg.Wait()
	return res, time.Since(start)
}

func firstErr(res []getResult) error {
	for _, r := range res {
		if r.err != nil {
			return r.err
		}
	}
	return nil
}

// rpsLoad sends method requests to url from conc goroutines for dur and
// returns requests per second (successful answers).
func rpsLoad(ctx context.Context, method, url string, conc int, dur time.Duration) (float64, error) {
	c := newClient(conc)
	defer c.CloseIdleConnections()
	// Warm the connections first so connection setup is not measured.
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = oneRequest(ctx, c, method, url)
		}()
	}
	wg.Wait()
	var ok, bad atomic.Int64
	var firstErr atomic.Value
	lctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				if err := oneRequest(ctx, c, method, url); err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if bad.Load() > 0 {
		return 0, fmt.Errorf("%d of %d %s %s failed: %v", bad.Load(), bad.Load()+ok.Load(), method, url, firstErr.Load())
	}
	return float64(ok.Load()) / el.Seconds(), nil
}

func oneRequest(ctx context.Context, c *http.Client, method, url string) error {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	return nil
}

// pullImage pulls repo:tag from base (a registry URL plus name prefix): the
// manifest, then config and layers with conc parallel downloads, like
// containerd. It returns the wall time, bytes read and the summed time
// blobs waited for their last byte.
func pullImage(ctx context.Context, base, repo, tag string, conc int) (time.Duration, int64, time.Duration, error) {
	c := newClient(conc)
	defer c.CloseIdleConnections()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return 0, 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, 0, fmt.Errorf("GET manifest: %s: %s", resp.Status, body)
	}
	var m struct {
		Config struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, 0, 0, fmt.Errorf("manifest: %v", err)
	}
	type job struct {
		dgst string
		size int64
	}
	jobs := make(chan job)
	var total, wait atomic.Int64
	var mu sync.Mutex
	var ferr error
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r := getBlob(ctx, c, base+"/v2/"+repo+"/blobs/"+j.dgst, time.Now(), j.size, false)
				total.Add(r.bytes)
				if r.penult > 0 {
					wait.Add(int64(r.total - r.penult))
				}
				if r.err != nil {
					mu.Lock()
					if ferr == nil {
						ferr = r.err
					}
					mu.Unlock()
				}
			}
		}()
	}
	jobs <- job{m.Config.Digest, m.Config.Size}
	for _, l := range m.Layers {
		jobs <- job{l.Digest, l.Size}
	}
	close(jobs)
	wg.Wait()
	return time.Since(start), total.Load() + int64(len(body)), time.Duration(wait.Load()), ferr
}
