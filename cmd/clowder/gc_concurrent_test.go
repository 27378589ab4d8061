package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// ---------------------------------------------------------------------------
// Pulling through clowder over plain HTTP, every byte checked.

const acceptManifests = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

var pullClient = &http.Client{Timeout: 30 * time.Second}

type ociDesc struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

type ociDoc struct {
	MediaType string    `json:"mediaType"`
	Manifests []ociDesc `json:"manifests"`
	Config    *ociDesc  `json:"config"`
	Layers    []ociDesc `json:"layers"`
	Blobs     []ociDesc `json:"blobs"`
}

func (d ociDoc) refs() []ociDesc {
	var out []ociDesc
	if d.Config != nil && d.Config.Digest != "" {
		out = append(out, *d.Config)
	}
	out = append(out, d.Layers...)
	return append(out, d.Blobs...)
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// fetch GETs a /v2/ path of clowder and checks the body against want (a
// digest, or "" for a tag: then the body must hash to Docker-Content-Digest).
func fetch(base, path, want string, accept bool) ([]byte, string, error) {
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	if accept {
		req.Header.Set("Accept", acceptManifests)
	}
	resp, err := pullClient.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: body after %d bytes: %v", path, len(b), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s = %d, want 200: %.200s", path, resp.StatusCode, b)
	}
	got := sha256Hex(b)
	if want == "" {
		want = resp.Header.Get("Docker-Content-Digest")
	}
	if got != want {
		return nil, "", fmt.Errorf("GET %s: body (%d bytes) hashes to %s, want %s", path, len(b), got, want)
	}
	return b, got, nil
}

// pullThrough pulls repo:tag through clowder at base the way a client
// does: the manifest by tag, an index's children by digest, then every
// config and layer; each body must hash to its digest and have the size
// its descriptor says. It returns the manifest digest and the bytes pulled.
func pullThrough(base, repo, tag string) (string, int64, error) {
	body, dg, err := fetch(base, "/v2/"+repo+"/manifests/"+tag, "", true)
	if err != nil {
		return "", 0, err
	}
	total := int64(len(body))
	var pullDoc func(b []byte, depth int) error
	pullDoc = func(b []byte, depth int) error {
		var d ociDoc
		if err := json.Unmarshal(b, &d); err != nil {
			return fmt.Errorf("%s:%s: manifest: %v", repo, tag, err)
		}
		for _, c := range d.Manifests {
			cb, _, err := fetch(base, "/v2/"+repo+"/manifests/"+c.Digest, c.Digest, true)
			if err != nil {
				return err
			}
			total += int64(len(cb))
			if int64(len(cb)) != c.Size {
				return fmt.Errorf("%s: child %s is %d bytes, want %d", repo, c.Digest, len(cb), c.Size)
			}
			if depth < 4 {
				if err := pullDoc(cb, depth+1); err != nil {
					return err
				}
			}
		}
		for _, x := range d.refs() {
			bb, _, err := fetch(base, "/v2/"+repo+"/blobs/"+x.Digest, x.Digest, false)
			if err != nil {
				return err
			}
			if int64(len(bb)) != x.Size {
				return fmt.Errorf("%s: blob %s is %d bytes, want %d", repo, x.Digest, len(bb), x.Size)
			}
			total += x.Size
		}
		return nil
	}
	return dg, total, pullDoc(body, 0)
}

// ---------------------------------------------------------------------------
// Reading a root the way an OCI tool would (no clowder code involved).

type layoutName struct {
	Name   string
	Digest string
	// Blobs are the digests the name references that the root holds (each
	// once) with their sizes; Missing the ones it does not hold or that do
	// not hash to their name.
	Blobs   map[string]int64
	Missing []string
}

// readNames walks every name of root's index.json through its manifests
// (index children, config, layers), reading blobs/ directly.
func readNames(t *testing.T, root string) []layoutName {
	t.Helper()
	names, err := readNamesErr(root)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func readNamesErr(root string) ([]layoutName, error) {
	b, err := os.ReadFile(filepath.Join(root, "index.json"))
	if err != nil {
		return nil, fmt.Errorf("index.json: %v", err)
	}
	var idx struct {
		Manifests []struct {
			ociDesc
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("index.json: %v\n%s", err, b)
	}
	var out []layoutName
	for _, m := range idx.Manifests {
		n := layoutName{Name: m.Annotations["org.opencontainers.image.ref.name"], Digest: m.Digest, Blobs: map[string]int64{}}
		var walk func(d ociDesc, manifest bool, depth int)
		walk = func(d ociDesc, manifest bool, depth int) {
			if _, seen := n.Blobs[d.Digest]; seen {
				return
			}
			alg, hexd, _ := strings.Cut(d.Digest, ":")
			data, err := os.ReadFile(filepath.Join(root, "blobs", alg, hexd))
			if err != nil {
				n.Missing = append(n.Missing, d.Digest+" ("+d.MediaType+"): "+err.Error())
				return
			}
			if alg == "sha256" && sha256Hex(data) != d.Digest {
				n.Missing = append(n.Missing, d.Digest+": hashes to "+sha256Hex(data))
				return
			}
			n.Blobs[d.Digest] = int64(len(data))
			if !manifest || depth > 4 {
				return
			}
			var doc ociDoc
			if json.Unmarshal(data, &doc) != nil {
				return
			}
			for _, c := range doc.Manifests {
				walk(c, true, depth+1)
			}
			for _, x := range doc.refs() {
				walk(x, false, depth+1)
			}
		}
		walk(m.ociDesc, true, 0)
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// referencedBytes is what the names reference and the root holds, each
// blob once (what max_size bounds).
func referencedBytes(names []layoutName) int64 {
	seen := map[string]int64{}
	for _, n := range names {
		for d, s := range n.Blobs {
			seen[d] = s
		}
	}
	var total int64
	for _, s := range seen {
		total += s
	}
	return total
}

// checkNamesComplete fails for every name of root that references a blob
// root does not hold (or holds damaged), then runs clowder verify and
// clowder export of every name.
func checkNamesComplete(t *testing.T, cfg, root string) []layoutName {
	t.Helper()
	names := readNames(t, root)
	var all []string
	for _, n := range names {
		if len(n.Missing) > 0 {
			t.Errorf("name %s (%s) is incomplete: missing %v", n.Name, n.Digest, n.Missing)
		}
		all = append(all, n.Name)
	}
	if out, err := run(t, "verify", "--config", cfg, "--root", root); err != nil || !strings.Contains(out, ", 0 bad") {
		t.Errorf("clowder verify = %v, want ok with 0 bad\n%s", err, out)
	}
	if len(all) == 0 {
		return names
	}
	tarPath := filepath.Join(t.TempDir(), "all.tar")
	if out, err := run(t, append([]string{"export", "--config", cfg, "--root", root, "-o", tarPath}, all...)...); err != nil {
		t.Errorf("clowder export %v = %v, want every name exportable\n%s", all, err, out)
	}
	return names
}

// ---------------------------------------------------------------------------
// Content.

// pushWithBase pushes an image of the shared base layer plus n random
// layers of size bytes as host/repo:tag; digest is called with the
// manifest digest before the push (a client may see it at once).
func pushWithBase(host, repo, tag string, base v1.Layer, n int, size int64, digest func(string)) (v1.Image, error) {
	img := empty.Image
	var layers []v1.Layer
	if base != nil {
		layers = append(layers, base)
	}
	for range n {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1), layers...)
	if err != nil {
		return nil, err
	}
	return img, pushImg(host, repo, tag, img, digest)
}

func pushImg(host, repo, tag string, img v1.Image, digest func(string)) error {
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if digest != nil {
		digest(d.String())
	}
	ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(ref, img)
}

// pushIdx pushes an OCI index of two random images (linux/amd64, arm64).
func pushIdx(host, repo, tag string, size int64, digest func(string)) error {
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(size, 2)
		if err != nil {
			return err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	digest(d.String())
	ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	return remote.WriteIndex(ref, idx)
}

// digestSet records the digests a tag pointed to upstream.
type digestSet struct {
	mu sync.Mutex
	m  map[string]map[string]bool // repo -> digests
}

func (s *digestSet) add(repo string) func(string) {
	return func(d string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.m == nil {
			s.m = map[string]map[string]bool{}
		}
		if s.m[repo] == nil {
			s.m[repo] = map[string]bool{}
		}
		s.m[repo][d] = true
	}
}

func (s *digestSet) has(repo, d string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[repo][d]
}

var gcOutRE = regexp.MustCompile(`^(\d+) blobs referenced; removed (\d+) blobs \(.*\); kept (\d+) recent unreferenced$`)

// ---------------------------------------------------------------------------

// clowder gc (the default grace and --grace 2s), run again and again while
// clients pull eight images (two of them indexes, two pairs sharing a base
// layer, one image and one index whose tags move upstream all the time),
// loses nothing a name references: every pull gets the right bytes, and at
// the end every name in index.json is complete (read straight from the
// layout, clowder verify, clowder export of all names), and the whole cache
// serves every image again with the upstream down after a final
// quiescent gc --grace 0s.
func TestGCWhilePullingLosesNothing(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	var ds digestSet
	baseA, err := random.Layer(96<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	baseB, err := random.Layer(64<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	static := []struct {
		repo string
		base v1.Layer
	}{{"app/one", baseA}, {"app/two", baseA}, {"svc/three", baseB}, {"svc/four", baseB}, {"solo/five", nil}}
	for i, s := range static {
		if _, err := pushWithBase(reg.DirectHost, s.repo, "1", s.base, 2, int64(20<<10*(i+1)), ds.add(s.repo)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pushIdx(reg.DirectHost, "multi/six", "1", 24<<10, ds.add("multi/six")); err != nil {
		t.Fatal(err)
	}
	move := func(i int) error { // new content under the moving tags
		if _, err := pushWithBase(reg.DirectHost, "moving/seven", "1", baseA, 1, int64(8<<10+i), ds.add("moving/seven")); err != nil {
			return err
		}
		return pushIdx(reg.DirectHost, "moving/eight", "1", int64(8<<10+i), ds.add("moving/eight"))
	}
	if err := move(0); err != nil {
		t.Fatal(err)
	}
	repos := []string{"app/one", "app/two", "svc/three", "svc/four", "solo/five", "multi/six", "moving/seven", "moving/eight"}

	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: reg, url: 'http://%s', tag_ttl: 0s}\n", reg.Host))
	root := t.TempDir()
	p := startServe(t, cfg, root)

	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		mu        sync.Mutex
		pullErrs  []string
		pulls     atomic.Int64
		gcRuns    [2]int // default grace, --grace 2s
		swept2s   int
		gcErrs    []string
		moves     atomic.Int64
		startedAt = time.Now()
	)
	fail := func(list *[]string, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(*list) < 20 {
			*list = append(*list, fmt.Sprintf(format, args...))
		}
	}
	// Four pullers, two images each, round after round until told to stop.
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := []string{repos[w], repos[w+4]}
			for round := 0; ; round++ {
				if round >= 2 {
					select {
					case <-stop:
						return
					default:
					}
				}
				for _, r := range mine {
					dg, _, err := pullThrough("http://"+p.addr, "reg/"+r, "1")
					pulls.Add(1)
					if err != nil {
						fail(&pullErrs, "pull reg/%s:1 (round %d): %v", r, round, err)
						continue
					}
					if !ds.has(r, dg) {
						fail(&pullErrs, "pull reg/%s:1 = %s, never pushed as %s:1", r, dg, r)
					}
				}
			}
		}()
	}
	// The tags of moving/seven and moving/eight move every 300 ms.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			if err := move(i); err != nil {
				fail(&pullErrs, "moving the tags upstream: %v", err)
				return
			}
			moves.Add(1)
		}
	}()
	// clowder gc, over and over, alternating the default grace and 2s.
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for i := 0; ; i++ {
			mu.Lock()
			enough := gcRuns[0] >= 3 && gcRuns[1] >= 4 && time.Since(startedAt) > 6*time.Second
			mu.Unlock()
			if enough {
				return
			}
			args := []string{"gc", "--config", cfg, "--root", root}
			if i%2 == 1 {
				args = append(args, "--grace", "2s")
			}
			out, err := run(t, args...)
			m := gcOutRE.FindStringSubmatch(strings.TrimSpace(out))
			if err != nil || m == nil {
				fail(&gcErrs, "clowder %v = %v\n%s", args, err, out)
				continue
			}
			removed, _ := strconv.Atoi(m[2])
			mu.Lock()
			gcRuns[i%2]++
			if i%2 == 1 {
				swept2s += removed
			}
			mu.Unlock()
			t.Logf("clowder %s: %s", strings.Join(args[0:1], "")+strings.Join(append([]string{""}, args[5:]...), " "), strings.TrimSpace(out))
		}
	}()
	select {
	case <-gcDone:
	case <-time.After(90 * time.Second):
		t.Error("gc loop did not finish in 90s")
	}
	close(stop)
	wg.Wait()
	t.Logf("%d pulls, %d tag moves, gc runs: %d default grace, %d --grace 2s (removed %d blobs)", pulls.Load(), moves.Load(), gcRuns[0], gcRuns[1], swept2s)
	for _, e := range pullErrs {
		t.Errorf("during gc: %s", e)
	}
	for _, e := range gcErrs {
		t.Errorf("gc during pulls: %s", e)
	}
	if swept2s == 0 {
		t.Errorf("clowder gc --grace 2s removed 0 blobs in %d runs, want > 0 (the moved tags leave unreferenced content)", gcRuns[1])
	}
	waitFillsDone(t, p) // a fill commits (fsync, rename) after its last byte
	p.kill()

	names := checkNamesComplete(t, cfg, root)
	got := map[string]string{}
	for _, n := range names {
		got[n.Name] = n.Digest
	}
	for _, r := range repos {
		if d, ok := got["reg/"+r+":1"]; !ok {
			t.Errorf("index.json has no reg/%s:1 (names: %v)", r, got)
		} else if !ds.has(r, d) {
			t.Errorf("index.json: reg/%s:1 = %s, never pushed as %s:1", r, d, r)
		}
	}

	// Everything named is self-contained: a gc with no grace at all, now
	// that nothing runs, and every image still pulls with no upstream.
	reg.SetDown(true)
	if out, err := run(t, "gc", "--config", cfg, "--root", root, "--grace", "0s"); err != nil || gcOutRE.FindString(strings.TrimSpace(out)) == "" {
		t.Fatalf("clowder gc --grace 0s (quiescent) = %v\n%s", err, out)
	}
	p2 := startServe(t, cfg, root)
	for _, r := range repos {
		dg, _, err := pullThrough("http://"+p2.addr, "reg/"+r, "1")
		if err != nil {
			t.Errorf("pull reg/%s:1 from the cache after gc --grace 0s, upstream down: %v", r, err)
		} else if want := got["reg/"+r+":1"]; dg != want {
			t.Errorf("pull reg/%s:1 from the cache = %s, want %s (index.json)", r, dg, want)
		}
	}
	if t.Failed() {
		t.Logf("clowder serve log (tail):\n%s", lastLines(p.log.String(), 30))
	}
}

// waitFillsDone waits until clowder serve reports no fill running.
func waitFillsDone(t *testing.T, p *proc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, text := get(t, "http://"+p.addr+"/metrics")
		if v, ok := metricValue(text, "clowder_fills_in_flight"); code == 200 && ok && v == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fills still running after 10s:\n%s", lastLines(p.log.String(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// clowder gc --grace 0s while clowder serve fills a manifest: the manifest
// blob is committed under blobs/ before its name is written to index.json
// (cas.Ingest, then Tag under the index lock), and a gc that takes the lock
// in between marks without it and sweeps it (its age is under any grace but
// 0). Tag, under the same lock, then finds the blob gone and refuses; the
// proxy writes the manifest again from the bytes it holds and names it, so
// the name never points at a manifest the root lost. The test makes the
// window certain by holding the index lock while the fill commits, then
// letting gc (only) through by replacing the lock file.
func TestGCGraceZeroKeepsManifestBeingNamed(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img := testutil.PushImage(t, reg.DirectHost, "lib/img", "1", 1, 4096)
	want, _ := img.Digest()
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: reg, url: 'http://%s'}\n", reg.Host))
	root := t.TempDir()
	p := startServe(t, cfg, root)

	lockPath := filepath.Join(root, ".clowder", "index.lock")
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	fi, _ := lock.Stat()
	ino := fi.Sys().(*syscall.Stat_t).Ino

	type answer struct {
		code int
		body []byte
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr+"/v2/reg/lib/img/manifests/1", nil)
		req.Header.Set("Accept", acceptManifests)
		resp, err := pullClient.Do(req)
		if err != nil {
			got <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- answer{resp.StatusCode, b, err}
	}()
	// The manifest is committed, and clowder serve waits for the index lock
	// to name it (a blocked flock on the lock file's inode in /proc/locks).
	blob := filepath.Join(root, "blobs", "sha256", want.Hex)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(blob)
		if err == nil && flockWaiter(ino) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("clowder serve never committed %s and waited for the index lock (blob: %v)\n%s", want, err, p.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A fresh lock file: gc takes it at once; serve still waits on the old one.
	tmp := lockPath + ".new"
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, lockPath); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "gc", "--config", cfg, "--root", root, "--grace", "0s")
	t.Logf("clowder gc --grace 0s, between commit and name: %v %s", err, strings.TrimSpace(out))
	syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	a := <-got
	if a.err != nil || a.code != 200 || sha256Hex(a.body) != want.String() {
		t.Fatalf("GET manifest = %d %v (%s), want 200 with %s", a.code, a.err, sha256Hex(a.body), want)
	}
	// gc swept the committed manifest (the window is real)...
	if m := gcOutRE.FindStringSubmatch(strings.TrimSpace(out)); m == nil || m[2] == "0" {
		t.Fatalf("gc between commit and name removed nothing (window not hit): %v %s", err, out)
	}
	// ...and the name still has its manifest: with the upstream down, a
	// fresh serve of the root answers the tag from the cache.
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("manifest %s named but not in the root after gc --grace 0s: %v", want, err)
	}
	p.kill()
	reg.SetDown(true)
	p2 := startServe(t, cfg, root)
	req, _ := http.NewRequest(http.MethodGet, "http://"+p2.addr+"/v2/reg/lib/img/manifests/1", nil)
	req.Header.Set("Accept", acceptManifests)
	resp, err := pullClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || sha256Hex(b) != want.String() {
		t.Errorf("GET reg/lib/img:1 from the cache, upstream down = %d %s, want 200 %s", resp.StatusCode, sha256Hex(b), want)
	}
}

// flockWaiter reports whether /proc/locks shows a process blocked on a
// flock of inode ino.
func flockWaiter(ino uint64) bool {
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return false
	}
	suffix := ":" + strconv.FormatUint(ino, 10)
	for _, l := range bytes.Split(b, []byte("\n")) {
		f := strings.Fields(string(l))
		if len(f) >= 7 && f[1] == "->" && f[2] == "FLOCK" && strings.HasSuffix(f[6], suffix) {
			return true
		}
	}
	return false
}
