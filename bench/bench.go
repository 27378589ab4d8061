package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

type bench struct {
	o    *options
	tmp  string
	data string // docroot: one file per blob, named by hex digest
	up   *upstreamReg

	big      string // digest of the big blob
	bigPath  string
	imgRepo  string // the layered image (cold pull)
	smallRep string // a small image (manifest load)

	distHosted string // root of the hosted distribution (big blob + small image pushed)
	rows       []row
	notes      []string
}

func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.tmp, err = os.MkdirTemp(b.o.dir, "clowder-bench-"); err != nil {
		return err
	}
	logf("temp dir %s", b.tmp)
	b.data = filepath.Join(b.tmp, "data")
	for _, d := range []string{b.data, filepath.Join(b.tmp, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if b.up, err = startUpstream(); err != nil {
		return err
	}
	seed := uint64(time.Now().UnixNano())
	needBig := b.o.only["warm"] || b.o.only["fanout"] || b.o.only["s3"]
	if needBig {
		logf("writing a %s random blob", human(b.o.size))
		if b.big, b.bigPath, err = b.writeBlob(seed, b.o.size); err != nil {
			return err
		}
		if err := b.up.addBlob(b.big, b.bigPath); err != nil {
			return err
		}
	}
	if b.o.only["image"] {
		logf("writing an image of %d x %s layers", b.o.layers, human(b.o.layerSize))
		if _, err := b.makeImage("bench/img", seed+1, b.o.layers, b.o.layerSize); err != nil {
			return err
		}
	}
	var small []byte
	if b.o.only["manifest"] {
		if small, err = b.makeImage("bench/small", seed+2, 3, 1024); err != nil {
			return err
		}
	}
	if b.o.only["warm"] || b.o.only["manifest"] {
		// The hosted distribution registry gets the same content pushed.
		b.distHosted = filepath.Join(b.tmp, "dist-hosted")
		p, base, err := b.startDistribution(ctx, "push", b.distHosted, "")
		if err != nil {
			return err
		}
		defer p.stop()
		if b.big != "" && b.o.only["warm"] {
			logf("pushing the blob into distribution")
			if err := pushBlob(ctx, base, "bench/big", b.big, b.bigPath); err != nil {
				return err
			}
		}
		if small != nil {
			if err := b.pushImage(ctx, base, "bench/small", "v1", small); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bench) cleanup() {
	if b.up != nil {
		b.up.close()
	}
	if b.tmp == "" {
		return
	}
	if b.o.keep {
		logf("kept %s", b.tmp)
		return
	}
	if err := os.RemoveAll(b.tmp); err != nil {
		logf("cleanup: %v", err)
	}
}

// writeBlob writes size pseudo-random bytes into the docroot, named by digest.
func (b *bench) writeBlob(seed uint64, size int64) (dgst, path string, err error) {
	f, err := os.CreateTemp(b.data, "tmp-")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), byte(seed >> 32), byte(seed >> 40)})
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, rng, size); err != nil {
		return "", "", err
	}
	if err := w.Flush(); err != nil {
		return "", "", err
	}
	if err := f.Close(); err != nil {
		return "", "", err
	}
	hx := hex.EncodeToString(h.Sum(nil))
	path = filepath.Join(b.data, hx)
	if err := os.Rename(f.Name(), path); err != nil {
		return "", "", err
	}
	return "sha256:" + hx, path, nil
}

func (b *bench) writeBytes(p []byte) (string, error) {
	sum := sha256.Sum256(p)
	hx := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(b.data, hx), p, 0o644); err != nil {
		return "", err
	}
	return "sha256:" + hx, nil
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// makeImage writes an OCI image (config + layers) into the docroot, serves
// it from the upstream as repo:v1 and returns the manifest.
func (b *bench) makeImage(repo string, seed uint64, layers int, layerSize int64) ([]byte, error) {
	var ls []descriptor
	var diffIDs []string
	for i := range layers {
		d, _, err := b.writeBlob(seed*1000+uint64(i), layerSize)
		if err != nil {
			return nil, err
		}
		ls = append(ls, descriptor{"application/vnd.oci.image.layer.v1.tar", d, layerSize})
		diffIDs = append(diffIDs, d)
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"config": map[string]any{"Cmd": []string{"/bin/true"}},
	})
	cd, err := b.writeBytes(cfg)
	if err != nil {
		return nil, err
	}
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{"application/vnd.oci.image.config.v1+json", cd, int64(len(cfg))},
		"layers":        ls,
	})
	for _, d := range append([]string{cd}, diffIDs...) {
		if err := b.up.addBlob(d, filepath.Join(b.data, strings.TrimPrefix(d, "sha256:"))); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(man)
	b.up.addManifest(repo, "v1", manifest{mediaType: "application/vnd.oci.image.manifest.v1+json", body: man, digest: "sha256:" + hex.EncodeToString(sum[:])})
	return man, nil
}

// pushBlob uploads a file with the OCI monolithic upload (POST then PUT).
func pushBlob(ctx context.Context, base, repo, dgst, path string) error {
	c := newClient(1)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST upload: %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	bu, _ := url.Parse(base)
	loc = bu.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, _ := f.Stat()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), f)
	req.ContentLength = fi.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = c.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT upload: %s: %s", resp.Status, body)
	}
	return nil
}

func (b *bench) pushImage(ctx context.Context, base, repo, tag string, man []byte) error {
	var m struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(man, &m); err != nil {
		return err
	}
	for _, d := range append([]descriptor{m.Config}, m.Layers...) {
		if err := pushBlob(ctx, base, repo, d.Digest, filepath.Join(b.data, strings.TrimPrefix(d.Digest, "sha256:"))); err != nil {
			return err
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(man))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := newClient(1).Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT manifest: %s: %s", resp.Status, body)
	}
	return nil
}

// waitFile polls until path exists (a blob committed into a cache).
func waitFile(ctx context.Context, path string, d time.Duration) bool {
	return waitFor(ctx, d, fileExists(path))
}

// waitFor polls until ok() or d has passed.
func waitFor(ctx context.Context, d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if ok() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func fileExists(path string) func() bool {
	return func() bool {
		_, err := os.Stat(path)
		return err == nil
	}
}

func clowderBlobPath(root, dgst string) string {
	return filepath.Join(root, "blobs", "sha256", strings.TrimPrefix(dgst, "sha256:"))
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%dB", n)
}

func mib(n int64) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}
