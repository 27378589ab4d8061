package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	s3Bucket = "clowder-bench"
	s3Access = "clowder" // hack/seaweedfs-sandbox.sh's identity
	s3Secret = "clowder-secret"
)

// s3: warm blob throughput from clowder on the s3 backend (a SeaweedFS
// bucket on loopback), without a local cache (every GET streams from the
// bucket) and with one that holds the blob, against clowder on the local
// backend measured in the same run.
func (b *bench) s3(ctx context.Context) error {
	o := b.o
	if _, err := os.Stat(o.weedBin); err != nil {
		msg := fmt.Sprintf("s3: skipped: no SeaweedFS binary (%v): run `make tool-seaweedfs` or set WEED", err)
		logf("%s", msg)
		b.notes = append(b.notes, msg)
		return nil
	}
	sw, err := startSeaweed(ctx, filepath.Join(b.tmp, "seaweedfs"), o.weedBin)
	if err != nil {
		return err
	}
	defer sw.stop()
	b.up.setRate(0)

	s3cfg := func(cache int64) string {
		return fmt.Sprintf("storage:\n  type: s3\n  s3:\n    endpoint: %s\n    bucket: %s\n    access_key: %s\n    secret_key: %s\nlocal_cache_size: %q\n",
			sw.endpoint, s3Bucket, s3Access, s3Secret, strconv.FormatInt(cache, 10))
	}
	noCache, withCache := s3cfg(0), s3cfg(2*o.size)
	localRoot := filepath.Join(b.tmp, "clowder-s3-local")
	noCacheRoot := filepath.Join(b.tmp, "clowder-s3-nocache")
	cacheRoot := filepath.Join(b.tmp, "clowder-s3-cache")
	logf("warming clowder on the local backend, the bucket, and a local cache (upstream unthrottled)")
	if err := b.primeClowder(ctx, "s3-local-fill", localRoot, "", fileExists(clowderBlobPath(localRoot, b.big))); err != nil {
		return fmt.Errorf("warming clowder (local backend): %w", err)
	}
	// The bucket is filled by a replica of its own, so the measured
	// no-cache replica's root never held the blob.
	inBucket := func() bool { return sw.hasBlob(ctx, b.big) }
	if err := b.primeClowder(ctx, "s3-bucket-fill", filepath.Join(b.tmp, "clowder-s3-fill"), noCache, inBucket); err != nil {
		return fmt.Errorf("filling the bucket: %w", err)
	}
	// A GET from the bucket starts the local copy in the background.
	if err := b.primeClowder(ctx, "s3-cache-fill", cacheRoot, withCache, fileExists(clowderBlobPath(cacheRoot, b.big))); err != nil {
		return fmt.Errorf("warming the local cache: %w", err)
	}

	// The engine's own rate: the same GETs straight from the bucket.
	direct, err := sw.presignedBlobURL(ctx, b.big)
	if err != nil {
		return err
	}
	const (
		local    = "clowder local backend"
		s3Direct = "SeaweedFS S3 GET direct"
		s3Plain  = "clowder s3, no cache"
		s3Cached = "clowder s3 + local cache"
	)
	for ci, c := range o.conc {
		scen, reps := b.warmScenario("s3 warm", c)
		logf("-- %s", scen)
		// Fresh processes per scenario, so VmHWM is this scenario's.
		systems := []system{{s3Direct, direct, nil}}
		for _, s := range []struct{ name, tag, root, cfg string }{
			{local, "local", localRoot, ""},
			{s3Plain, "nocache", noCacheRoot, noCache},
			{s3Cached, "cache", cacheRoot, withCache},
		} {
			p, base, err := b.startClowderWith(ctx, o.clowderBin, fmt.Sprintf("s3-%s-c%d", s.tag, c), s.root, s.cfg)
			if err != nil {
				stopSystems(systems)
				return err
			}
			systems = append(systems, system{s.name, base + "/v2/up/bench/big/blobs/" + b.big, p})
		}
		b.up.reset()
		vals, rss, err := b.measureWarm(ctx, systems, c, reps, ci == 0)
		stopSystems(systems)
		if err != nil {
			return err
		}
		if n := b.up.counts().blobGets; n != 0 {
			b.notes = append(b.notes, fmt.Sprintf("%s: clowder went upstream %d times (cache not warm?)", scen, n))
		}
		if fileExists(clowderBlobPath(noCacheRoot, b.big))() {
			b.notes = append(b.notes, fmt.Sprintf("%s: the no-cache replica holds a local copy (its GETs may not have streamed from the bucket)", scen))
		}
		sysRow := func(name, note string) row {
			r := row{scenario: scen, system: name, unit: "GB/s", vals: vals[name], rss: rss[name], note: note}
			if name != local {
				r.ratio(median(vals[local]), "local", 0, true)
			}
			return r
		}
		b.rows = append(b.rows,
			sysRow(local, "baseline"),
			sysRow(s3Direct, "presigned URL, no clowder"),
			sysRow(s3Plain, fmt.Sprintf("%.2fx S3 direct", median(vals[s3Plain])/median(vals[s3Direct]))),
			sysRow(s3Cached, ""))
	}
	if hwm := sw.hwm(); hwm > 0 {
		b.notes = append(b.notes, fmt.Sprintf("s3: SeaweedFS (weed mini) peak RSS %s", mib(hwm)))
	}
	return nil
}

func stopSystems(systems []system) {
	for _, s := range systems {
		s.p.stop() // nil for a system that is not this scenario's process
	}
}

// seaweed is a SeaweedFS (`weed mini`: master, volume, filer, S3 gateway)
// run by hack/seaweedfs-sandbox.sh in dir, on loopback.
type seaweed struct {
	script   string
	dir      string
	endpoint string
	c        *minio.Client
}

func startSeaweed(ctx context.Context, dir, weed string) (*seaweed, error) {
	script, err := filepath.Abs(filepath.Join("hack", "seaweedfs-sandbox.sh"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("%v (run the bench from the repository root, as make bench does)", err)
	}
	s := &seaweed{script: script, dir: dir}
	cmd := exec.CommandContext(ctx, "bash", script, "start", dir)
	cmd.Env = append(os.Environ(), "WEED="+weed)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.stop()
		return nil, fmt.Errorf("seaweedfs-sandbox.sh start: %v\n%s", err, lastLines(string(out), 10))
	}
	ep, err := os.ReadFile(filepath.Join(dir, "endpoint"))
	if err != nil {
		s.stop()
		return nil, err
	}
	s.endpoint = strings.TrimSpace(string(ep))
	u, err := url.Parse(s.endpoint)
	if err == nil {
		s.c, err = minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(s3Access, s3Secret, ""), Region: "us-east-1"})
	}
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("seaweedfs endpoint %q: %v", s.endpoint, err)
	}
	logf("SeaweedFS S3 on %s (log %s)", s.endpoint, filepath.Join(dir, "weed.log"))
	return s, nil
}

func (s *seaweed) stop() {
	if out, err := exec.Command("bash", s.script, "stop", s.dir).CombinedOutput(); err != nil {
		logf("seaweedfs-sandbox.sh stop: %v\n%s", err, out)
	}
}

// hasBlob reports whether the blob is in the bench bucket.
func (s *seaweed) hasBlob(ctx context.Context, dgst string) bool {
	_, err := s.c.StatObject(ctx, s3Bucket, blobKey(dgst), minio.StatObjectOptions{})
	return err == nil
}

// presignedBlobURL returns a plain-GET URL of the blob in the bucket.
func (s *seaweed) presignedBlobURL(ctx context.Context, dgst string) (string, error) {
	u, err := s.c.PresignedGetObject(ctx, s3Bucket, blobKey(dgst), 24*time.Hour, nil)
	if err != nil {
		return "", fmt.Errorf("presign %s: %w", dgst, err)
	}
	return u.String(), nil
}

// blobKey is the key the s3 backend gives a blob: its OCI layout path.
func blobKey(dgst string) string { return "blobs/sha256/" + strings.TrimPrefix(dgst, "sha256:") }

// hwm returns weed's peak RSS (VmHWM), or -1.
func (s *seaweed) hwm() int64 {
	data, err := os.ReadFile(filepath.Join(s.dir, "weed.pid"))
	if err != nil {
		return -1
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return -1
	}
	return procStatus(pid, "VmHWM")
}
