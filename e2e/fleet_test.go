package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The fleet: three clowder replicas on one SeaweedFS bucket (make test-s3
// starts SeaweedFS and sets CLOWDER_S3_*), in front of a real distribution
// registry behind a throttling, counting proxy (the slow WAN link).

// upstreamLink is a reverse proxy to the registry that sends blob bodies at
// a fixed rate and counts what each blob cost the upstream.
type upstreamLink struct {
	addr string
	rate atomic.Int64 // bytes per second for blob bodies

	mu     sync.Mutex
	gets   map[string]int   // blob digest -> GETs
	bytes  map[string]int64 // blob digest -> body bytes sent
	ranges map[string][]string
}

func startUpstreamLink(t *testing.T, regAddr string, rate int64) *upstreamLink {
	t.Helper()
	u := &upstreamLink{gets: map[string]int{}, bytes: map[string]int64{}, ranges: map[string][]string{}}
	u.rate.Store(rate)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: regAddr})
	rp.FlushInterval = -1
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := strings.Index(r.URL.Path, "/blobs/sha256:")
		if r.Method != http.MethodGet || i < 0 {
			rp.ServeHTTP(w, r)
			return
		}
		d := r.URL.Path[i+len("/blobs/"):]
		u.mu.Lock()
		u.gets[d]++
		u.ranges[d] = append(u.ranges[d], r.Header.Get("Range"))
		u.mu.Unlock()
		rp.ServeHTTP(&throttled{ResponseWriter: w, u: u, d: d}, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	u.addr = ln.Addr().String()
	return u
}

func (u *upstreamLink) stats(d string) (gets int, bytes int64, ranges []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gets[d], u.bytes[d], append([]string(nil), u.ranges[d]...)
}

type throttled struct {
	http.ResponseWriter
	u *upstreamLink
	d string
}

func (w *throttled) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := min(len(p), 64<<10)
		time.Sleep(time.Duration(float64(chunk) / float64(w.u.rate.Load()) * float64(time.Second)))
		m, err := w.ResponseWriter.Write(p[:chunk])
		n += m
		w.u.mu.Lock()
		w.u.bytes[w.d] += int64(m)
		w.u.mu.Unlock()
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		if err != nil {
			return n, err
		}
		p = p[chunk:]
	}
	return n, nil
}

type s3env struct {
	endpoint, access, secret string
}

func needS3(t *testing.T) s3env {
	t.Helper()
	e := s3env{os.Getenv("CLOWDER_S3_ENDPOINT"), os.Getenv("CLOWDER_S3_ACCESS_KEY"), os.Getenv("CLOWDER_S3_SECRET_KEY")}
	if e.endpoint == "" {
		t.Skip("fleet tests need an S3 engine: make test-s3 (SeaweedFS)")
	}
	return e
}

// fleetBucket is the one bucket fleet tests share, each under a key prefix
// of its own (an S3 engine on a small disk has room for few buckets).
const fleetBucket = "clowder-test"

// startReplica runs a clowder replica on the prefix of fleetBucket with
// upstream `up`.
func startReplica(t *testing.T, tl *tools, s3 s3env, prefix, upAddr, name string, extra ...string) *clowder {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
root: %s
storage:
  type: s3
  lease_ttl: 2s
  s3:
    endpoint: %s
    bucket: %s
    prefix: %s
    access_key: %s
    secret_key: %s
upstreams:
  - name: up
    type: oci
    url: http://%s
    tag_ttl: 1h
`, filepath.Join(dir, "root"), s3.endpoint, fleetBucket, prefix, s3.access, s3.secret, upAddr) + strings.Join(extra, "")
	p := filepath.Join(dir, "clowder.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return startClowder(t, tl, p, filepath.Join(dir, name+".log"))
}

// startNginx runs nginx on a free loopback port, balancing round-robin over
// reps with X-Forwarded-For set, and returns its host:port.
func startNginx(t *testing.T, tl *tools, reps []*clowder) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(dir, "tmp", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var servers strings.Builder
	for _, r := range reps {
		fmt.Fprintf(&servers, "    server %s;\n", r.addr)
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  upstream clowders {
%[2]s  }
  server {
    listen %[3]s;
    client_max_body_size 0;
    location / {
      proxy_pass http://clowders;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
    }
  }
}
`, dir, servers.String(), addr)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "nginx", filepath.Join(dir, "nginx.log"), command(tl.nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath))
	for deadline := time.Now().Add(procStartTimeout); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr
			}
		}
		if p.exited() || time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start on %s:\n%s\n%s", addr, p.log(), b)
		}
	}
}

// fetchBlob GETs a blob and returns the sha256 of the body.
func fetchBlob(ctx context.Context, addr, repo, dgst string) (string, int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/"+repo+"/blobs/"+dgst, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", 0, fmt.Errorf("%s: %s", resp.Status, b)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return "", n, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

func fleetEvents(t testing.TB, c *clowder, kind string) []map[string]any {
	var out []map[string]any
	for _, l := range logLines(t, c.p.logPath) {
		if l["message"] == "fleet "+kind {
			out = append(out, l)
		}
	}
	return out
}

// bigLayer pushes an image whose one layer is n random bytes (a tar of
// incompressible data) and returns the layer's digest and size.
func bigLayer(t *testing.T, tl *tools, reg, ref string, n int) (string, int64) {
	t.Helper()
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "big.tar")
	writeTar(t, tarPath, map[string][]byte{"big.bin": randomBytes(t, n)})
	command(tl.crane, "append", "--insecure", "--oci-empty-base", "-f", tarPath, "-t", reg+"/"+ref).must(t)
	m := parseManifest(t, ref, []byte(command(tl.crane, "manifest", "--insecure", reg+"/"+ref).must(t)))
	if len(m.Layers) != 1 {
		t.Fatalf("%s has %d layers, want 1", ref, len(m.Layers))
	}
	return m.Layers[0].Digest, m.Layers[0].Size
}

func TestFleet(t *testing.T) {
	tl := needTools(t)
	s3 := needS3(t)
	reg := startRegistry(t, tl)
	link := startUpstreamLink(t, reg.addr, 1<<30)
	bucket := fmt.Sprintf("fleet-%d/", time.Now().UnixNano()%1e9) // the key prefix

	fanDigest, fanSize := bigLayer(t, tl, reg.addr, "fleet/fan:1", 24<<20)
	killDigest, killSize := bigLayer(t, tl, reg.addr, "fleet/kill:1", 32<<20)
	lostDigest, lostSize := bigLayer(t, tl, reg.addr, "fleet/lost:1", 4<<20)
	const names = 15
	for i := range names {
		command(tl.crane, "tag", "--insecure", reg.addr+"/fleet/fan:1", fmt.Sprintf("t%d", i)).must(t)
	}

	reps := []*clowder{
		startReplica(t, tl, s3, bucket, link.addr, "a"),
		startReplica(t, tl, s3, bucket, link.addr, "b"),
		startReplica(t, tl, s3, bucket, link.addr, "c"),
	}

	t.Run("NamesFromAllReplicas", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := reps[i%3]
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/up/fleet/fan/manifests/t%d", c.addr, i), nil)
				req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("manifest t%d: %v", i, err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("manifest t%d via replica %d: %s %s", i, i%3, resp.Status, b)
				}
			}()
		}
		wg.Wait()
		// The bucket is a layout: every name is in its index.json.
		idx := bucketIndex(t, s3, bucket)
		have := map[string]bool{}
		for _, d := range idx.Manifests {
			have[d.Annotations["org.opencontainers.image.ref.name"]] = true
		}
		for i := range names {
			if n := fmt.Sprintf("up/fleet/fan:t%d", i); !have[n] {
				t.Errorf("index.json in the bucket lacks %s (has %d names)", n, len(have))
			}
		}
	})

	t.Run("OneUpstreamFetchFor30Clients", func(t *testing.T) {
		link.rate.Store(12 << 20) // 24 MiB in 2 s: every client arrives mid-fill
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		var failed atomic.Int32
		start := make(chan struct{})
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got, n, err := fetchBlob(ctx, reps[i%3].addr, "up/fleet/fan", fanDigest)
				if err != nil || got != fanDigest || n != fanSize {
					failed.Add(1)
					t.Errorf("client %d via replica %d: %s, %d bytes, %v; want %s, %d", i, i%3, got, n, err, fanDigest, fanSize)
				}
			}()
		}
		close(start)
		wg.Wait()
		gets, bytes, _ := link.stats(fanDigest)
		t.Logf("30 clients over 3 replicas: upstream blob GETs %d, bytes %d (blob %d)", gets, bytes, fanSize)
		if gets != 1 || bytes != fanSize {
			t.Errorf("upstream sent the blob %d times (%d bytes), want once (%d bytes)", gets, bytes, fanSize)
		}
		var leases, follows int
		for _, c := range reps {
			leases += len(fleetEvents(t, c, "lease"))
			follows += len(fleetEvents(t, c, "follow"))
		}
		if leases != 1 || follows < 2 {
			t.Errorf("fleet events: %d leases, %d follows; want 1 lease and the two other replicas following", leases, follows)
		}
		var followMetric int
		for _, c := range reps {
			followMetric += scrapeCounter(t, c.addr, `clowder_fleet_fills_total{kind="follow"}`)
		}
		if followMetric != follows {
			t.Errorf("clowder_fleet_fills_total{kind=\"follow\"} summed over replicas = %d, want %d (the log's follow lines)", followMetric, follows)
		}
	})

	t.Run("BucketIsALayout", func(t *testing.T) {
		// The config blob too, so the copy holds a whole image.
		m := parseManifest(t, "fleet/fan:1", []byte(command(tl.crane, "manifest", "--insecure", reps[1].addr+"/up/fleet/fan:t0").must(t)))
		if got, _, err := fetchBlob(context.Background(), reps[2].addr, "up/fleet/fan", m.Config.Digest); err != nil || got != m.Config.Digest {
			t.Fatalf("config blob: %s, %v", got, err)
		}
		waitFor(t, 10*time.Second, "the config blob's upload", func() bool {
			_, err := bucketStat(t, s3, bucket, m.Config.Digest)
			return err == nil
		})
		dir := mirrorBucket(t, s3, bucket)
		out := command(tl.skopeo, "inspect", "oci:"+dir+":up/fleet/fan:t3").must(t)
		var in struct{ Digest string }
		if err := json.Unmarshal([]byte(out), &in); err != nil || in.Digest == "" {
			t.Fatalf("skopeo inspect of the bucket copy: %v\n%s", err, out)
		}
		if want := strings.TrimSpace(command(tl.crane, "digest", "--insecure", reg.addr+"/fleet/fan:t3").must(t)); in.Digest != want {
			t.Errorf("skopeo inspect oci:<bucket copy>:up/fleet/fan:t3 digest %s, want the upstream's %s", in.Digest, want)
		}
	})

	t.Run("UnreachableOwner", func(t *testing.T) {
		// A replica whose advertise address is wrong holds the lease: the
		// others cannot follow it, and after two lease lifetimes fetch on
		// their own instead of failing.
		link.rate.Store(256 << 10) // 4 MiB in 16 s: longer than the 4 s (2 x lease_ttl) wait
		lost := startReplica(t, tl, s3, bucket, link.addr, "lost", "advertise: http://127.0.0.1:1\n")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		type res struct {
			got string
			n   int64
			err error
		}
		fetch := func(addr string) chan res {
			c := make(chan res, 1)
			go func() {
				got, n, err := fetchBlob(ctx, addr, "up/fleet/lost", lostDigest)
				c <- res{got, n, err}
			}()
			return c
		}
		holder := fetch(lost.addr)
		waitFor(t, 30*time.Second, "the lost replica's upstream fetch to start", func() bool {
			_, b, _ := link.stats(lostDigest)
			return b > 0
		})
		began := time.Now()
		other := fetch(reps[1].addr)
		waitFor(t, 30*time.Second, "a replica that cannot reach the lease holder to fetch alone", func() bool {
			return len(fleetEvents(t, reps[1], "alone")) > 0
		})
		t.Logf("fetching alone after %s", time.Since(began).Round(time.Millisecond))
		warned := 0
		for _, l := range logLines(t, reps[1].p.logPath) {
			if m, _ := l["message"].(string); strings.HasPrefix(m, "fleet holder unreachable") && l["peer"] == "http://127.0.0.1:1" {
				warned++
			}
		}
		if warned == 0 {
			t.Errorf("no \"fleet holder unreachable\" warning naming http://127.0.0.1:1 when the wait began")
		}
		link.rate.Store(64 << 20)
		for name, c := range map[string]chan res{"the lease holder's client": holder, "the other replica's client": other} {
			if r := <-c; r.err != nil || r.got != lostDigest || r.n != lostSize {
				t.Errorf("%s: %s, %d bytes, %v; want %s, %d", name, r.got, r.n, r.err, lostDigest, lostSize)
			}
		}
		if gets, _, _ := link.stats(lostDigest); gets != 2 {
			t.Errorf("upstream GETs %d, want 2 (the holder's and the fallback)", gets)
		}
	})

	// Two replicas with auth behind a real nginx balancing round-robin:
	// crane logs in once (a token from whichever replica answered /token)
	// and pulls with requests spread over both; X-Forwarded-For from nginx
	// names the client in each replica's access log (trusted_proxies).
	t.Run("BehindNginx", func(t *testing.T) {
		auth := `auth:
  tokens: [{user: ci, token: fleet-token-0123456789}]
  rules: [{names: ["up/*"], users: [ci], actions: [pull]}]
trusted_proxies: [127.0.0.1]
`
		lbReps := []*clowder{
			startReplica(t, tl, s3, bucket, link.addr, "lb-a", auth),
			startReplica(t, tl, s3, bucket, link.addr, "lb-b", auth),
		}
		lb := startNginx(t, tl, lbReps)
		env := []string{"HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir()}
		command(tl.crane, "auth", "login", lb, "-u", "ci", "-p", "fleet-token-0123456789").withEnv(env...).must(t)
		want := strings.TrimSpace(command(tl.crane, "digest", "--insecure", reg.addr+"/fleet/fan:t1").must(t))
		for i := range 4 {
			if got := strings.TrimSpace(command(tl.crane, "digest", "--insecure", lb+"/up/fleet/fan:t1").withEnv(env...).must(t)); got != want {
				t.Fatalf("crane digest #%d through nginx = %s, want %s", i, got, want)
			}
		}
		command(tl.crane, "pull", "--insecure", lb+"/up/fleet/fan:t1", filepath.Join(t.TempDir(), "img.tar")).withEnv(env...).must(t)
		for i, r := range lbReps {
			ok := 0
			for _, l := range logLines(t, r.p.logPath) {
				if l["message"] == "request" && strings.HasPrefix(str(l, "path"), "/v2/up/") && l["status"] == float64(200) {
					ok++
				}
			}
			if ok == 0 {
				t.Errorf("replica %d answered no authenticated request through nginx: a token from one replica must be taken by the other", i)
			}
		}

		req, _ := http.NewRequest(http.MethodGet, "http://"+lb+"/v2/", nil)
		req.Header.Set("X-Forwarded-For", "198.51.100.7")
		for range 2 { // one to each replica
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		seen := 0
		for _, r := range lbReps {
			for _, l := range logLines(t, r.p.logPath) {
				if l["message"] == "request" && str(l, "path") == "/v2/" && str(l, "client") == "198.51.100.7" {
					seen++
				}
			}
		}
		if seen == 0 {
			t.Errorf("no access log line with client 198.51.100.7 (X-Forwarded-For through nginx, trusted_proxies)")
		}
	})

	t.Run("OwnerKilledMidFill", func(t *testing.T) {
		link.rate.Store(4 << 20) // 32 MiB in 8 s
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		owner, others := reps[0], reps[1:]
		go func() { _, _, _ = fetchBlob(ctx, owner.addr, "up/fleet/kill", killDigest) }() // dies with its replica
		waitFor(t, 30*time.Second, "the owner's upstream fetch to pass 4 MiB", func() bool {
			_, b, _ := link.stats(killDigest)
			return b >= 4<<20
		})
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, n, err := fetchBlob(ctx, others[i%2].addr, "up/fleet/kill", killDigest)
				if err != nil || got != killDigest || n != killSize {
					t.Errorf("client %d via a surviving replica: %s, %d bytes, %v; want %s, %d", i, got, n, err, killDigest, killSize)
				}
			}()
		}
		waitFor(t, 30*time.Second, "the owner's upstream fetch to pass 8 MiB", func() bool {
			_, b, _ := link.stats(killDigest)
			return b >= 8<<20
		})
		if err := syscall.Kill(-owner.p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_, atKill, _ := link.stats(killDigest)
		t.Logf("SIGKILL owner replica after %d upstream bytes", atKill)
		link.rate.Store(16 << 20)
		wg.Wait()
		gets, bytes, ranges := link.stats(killDigest)
		t.Logf("upstream blob GETs %d (Range headers %q), bytes %d (blob %d)", gets, ranges, bytes, killSize)
		var takeovers int
		for _, c := range others {
			takeovers += len(fleetEvents(t, c, "takeover"))
		}
		if takeovers != 1 {
			t.Errorf("takeovers = %d, want exactly 1 surviving replica taking the expired lease", takeovers)
		}
		if gets != 2 || !strings.HasPrefix(ranges[len(ranges)-1], "bytes=") {
			t.Errorf("upstream GETs %d (ranges %q), want the owner's and one resumed ranged GET", gets, ranges)
		}
		if bytes > killSize+killSize/4 {
			t.Errorf("upstream sent %d bytes for a %d-byte blob: the takeover did not resume", bytes, killSize)
		}
		// The new owner uploads once it has committed (just after its
		// clients got their last, verified byte).
		waitFor(t, 30*time.Second, "the blob in the bucket after the takeover", func() bool {
			n, err := bucketStat(t, s3, bucket, killDigest)
			return err == nil && n == killSize
		})
	})
}

// scrapeCounter reads one sample from a replica's /metrics (0 when absent).
func scrapeCounter(t *testing.T, addr, sample string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var n float64
			fmt.Sscan(v, &n)
			return int(n)
		}
	}
	return 0
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func s3client(t *testing.T, s3 s3env) *minio.Client {
	t.Helper()
	u, _ := url.Parse(s3.endpoint)
	c, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(s3.access, s3.secret, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type indexDoc struct {
	Manifests []struct {
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
	} `json:"manifests"`
}

func bucketIndex(t *testing.T, s3 s3env, prefix string) indexDoc {
	t.Helper()
	obj, err := s3client(t, s3).GetObject(context.Background(), fleetBucket, prefix+"index.json", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	var idx indexDoc
	if err := json.NewDecoder(obj).Decode(&idx); err != nil {
		t.Fatalf("index.json in the bucket: %v", err)
	}
	return idx
}

// mirrorBucket copies the layout keys under prefix (not .clowder/ leases)
// into a directory, as `aws s3 sync` would.
func mirrorBucket(t *testing.T, s3 s3env, prefix string) string {
	t.Helper()
	c := s3client(t, s3)
	dir := t.TempDir()
	ctx := context.Background()
	for obj := range c.ListObjects(ctx, fleetBucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		rel := strings.TrimPrefix(obj.Key, prefix)
		if strings.HasPrefix(rel, ".clowder/") {
			continue
		}
		if err := c.FGetObject(ctx, fleetBucket, obj.Key, filepath.Join(dir, filepath.FromSlash(rel)), minio.GetObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func bucketStat(t *testing.T, s3 s3env, prefix, dgst string) (int64, error) {
	t.Helper()
	info, err := s3client(t, s3).StatObject(context.Background(), fleetBucket, prefix+"blobs/sha256/"+strings.TrimPrefix(dgst, "sha256:"), minio.StatObjectOptions{})
	return info.Size, err
}
