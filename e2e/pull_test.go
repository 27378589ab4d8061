package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPullThrough: real clients pull through Clowder from a real registry and
// must see exactly the upstream's digests (crane, oras, regctl, skopeo,
// containerd via a hosts.toml mirror and ?ns=); routing, 404s, referrers, a
// moving tag and a cold fan-out behave as on the upstream; then the upstream
// hangs, then goes away, and the warm cache keeps serving; last, strict
// readers read the cache directory as an OCI image layout.
//
// The subtests run in order and share one registry, one clowder and one
// containerd. Each warms what it needs itself (cheap when an earlier subtest
// already did), so a single one can run alone with -run.
func TestPullThrough(t *testing.T) {
	tl := needTools(t)
	reg := startRegistry(t, tl)
	c := pushContent(t, tl, reg.addr)

	work := t.TempDir()
	cfg := writeConfig(t, work, reg.addr, filepath.Join(work, "cache"))
	cl := startClowder(t, tl, cfg, filepath.Join(work, "clowder.log"))
	t.Cleanup(func() {
		// Clowder's own warnings, for the record (5xx while the upstream is
		// down are expected).
		warns := map[string]int{}
		for _, l := range logLines(t, cl.p.logPath) {
			if lv := str(l, "level"); lv == "warn" || lv == "error" {
				warns[fmt.Sprintf("%s %s %s %d %s", lv, str(l, "message"), str(l, "path"), num(l, "status"), str(l, "error")+str(l, "cause"))]++
			}
		}
		for w, n := range warns {
			t.Logf("clowder log: %dx %s", n, w)
		}
		if t.Failed() {
			t.Logf("clowder log (%s), last lines:\n%s", cl.p.logPath, tail(cl.p.log(), 25))
		}
	})
	e := &env{tl: tl, reg: reg, c: c, cl: cl, parent: t}

	t.Run("crane", e.testCrane)
	t.Run("oras", e.testOras)
	t.Run("regctl", e.testRegctl)
	t.Run("skopeo", e.testSkopeo)
	t.Run("containerd", e.testContainerd)
	t.Run("containerd-ns-routing", e.testNamespaceRouting)
	t.Run("not-found", e.testNotFound)
	t.Run("referrers", e.testReferrers)
	t.Run("tag-moves", e.testTagMoves)
	t.Run("concurrent-cold", e.testConcurrentCold)
	t.Run("upstream-hung", e.testUpstreamHung)
	t.Run("upstream-down", e.testUpstreamDown)
	t.Run("cache-layout", e.testCacheLayout)
}

// env is what TestPullThrough's subtests share.
type env struct {
	tl  *tools
	reg *registry
	c   *content
	cl  *clowder

	parent *testing.T // TestPullThrough itself, for shared cleanups

	signOnce sync.Once
	sigs     []string // referrers of refSigned on the upstream

	ctdOnce sync.Once
	ctd     *ctdSandbox
}

// up is REF on the upstream named `up`, through clowder.
func (e *env) up(ref string) string { return e.cl.addr + "/up/" + ref }

func (e *env) crane(args ...string) cmd { return command(e.tl.crane, args...) }

// checkDigest runs a command printing a digest and compares it with want.
func checkDigest(t *testing.T, c cmd, want string) {
	t.Helper()
	out, ok := c.should(t)
	if !ok {
		return
	}
	if got := strings.TrimSpace(out); got != want {
		t.Errorf("%s = %s, want %s", c.line(), got, want)
	}
}

// checkLayoutRef checks that the OCI layout dir names ref with digest want
// and that the manifest blob there hashes to it.
func checkLayoutRef(t *testing.T, what, dir, ref, want string) {
	t.Helper()
	d, err := layoutRef(t, dir, ref)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if d.Digest != want {
		t.Errorf("%s: digest of %q in %s/index.json = %s, want %s", what, ref, dir, d.Digest, want)
	}
	if _, err := layoutBlob(t, dir, d.Digest); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func (e *env) testCrane(t *testing.T) {
	c := e.c
	// Tags and nested names on the `up` upstream: digest (HEAD) and bytes (GET).
	for _, ref := range []string{refBase, refMulti, refPlain, refNested, refDocker, refArt} {
		checkDigest(t, e.crane("digest", "--insecure", e.up(ref)), c.digest[ref])
		m := e.crane("manifest", "--insecure", e.up(ref))
		if out, ok := m.should(t); ok && !bytes.Equal([]byte(out), c.manifest[ref]) {
			t.Errorf("%s = %d bytes (%s), want the upstream's %d bytes (%s)", m.line(), len(out), sha256Digest([]byte(out)), len(c.manifest[ref]), c.digest[ref])
		}
	}
	// A child of the index, by platform (HEAD tag, GET index, then the child by digest).
	checkDigest(t, e.crane("digest", "--insecure", "--platform", "linux/arm64", e.up(refMulti)), c.arm64)

	// Docker-style names go to the default upstream docker.io, which adds
	// library/ to one-segment names only.
	for name, ref := range map[string]string{
		"hello:multi":                   refHelloMulti,
		"hello:1":                       refHello1,
		"library/hello:1":               refHello1,
		"docker.io/library/hello:multi": refHelloMulti,
	} {
		checkDigest(t, e.crane("digest", "--insecure", e.cl.addr+"/"+name), c.digest[ref])
	}

	dir := t.TempDir()
	// Docker tarballs (crane picks linux/amd64 from the index).
	for i, ref := range []string{e.up(refMulti), e.up(refNested), e.cl.addr + "/hello:1"} {
		tarball := filepath.Join(dir, "pull"+string(rune('0'+i))+".tar")
		if _, ok := e.crane("pull", "--insecure", ref, tarball).should(t); ok {
			if fi, err := os.Stat(tarball); err != nil || fi.Size() < 512<<10 {
				t.Errorf("crane pull --insecure %s %s: tarball %v, want the image (> 512 KiB)", ref, tarball, err)
			}
		}
	}
	// OCI layouts: the whole index with every platform, and a Docker v2 image.
	for _, ref := range []string{refMulti, refDocker} {
		out := filepath.Join(dir, "oci-"+strings.NewReplacer("/", "-", ":", "-").Replace(ref))
		pull := e.crane("pull", "--insecure", "--format", "oci", e.up(ref), out)
		if _, ok := pull.should(t); ok {
			checkLayoutRef(t, pull.line(), out, "", c.digest[ref])
		}
	}
	// tags/list goes through too.
	ls := e.crane("ls", "--insecure", e.cl.addr+"/up/test/img")
	if out, ok := ls.should(t); ok {
		tags := strings.Fields(out)
		sort.Strings(tags)
		have := " " + strings.Join(tags, " ") + " "
		for _, w := range []string{"amd64", "arm64", "base", "multi", "plain"} {
			if !strings.Contains(have, " "+w+" ") {
				t.Errorf("%s = %q, want it to include %q", ls.line(), tags, w)
			}
		}
	}
}

func (e *env) testOras(t *testing.T) {
	c := e.c
	dir := t.TempDir()
	oras := func(args ...string) cmd { return command(e.tl.oras, args...) }

	// The artifact's file, byte-equal.
	out := filepath.Join(dir, "pulled")
	if _, ok := oras("pull", "--plain-http", "-o", out, e.up(refArt)).should(t); ok {
		got, err := os.ReadFile(filepath.Join(out, artifactTitle))
		if err != nil || !bytes.Equal(got, c.artifact) {
			t.Errorf("oras pull --plain-http -o %s %s: %s = %q (%v), want %q", out, e.up(refArt), artifactTitle, got, err, c.artifact)
		}
	}
	for _, ref := range []string{refArt, refMulti, refNested} {
		f := oras("manifest", "fetch", "--plain-http", "--descriptor", e.up(ref))
		if s, ok := f.should(t); ok {
			if got := descriptorDigest(t, f.line(), s); got != c.digest[ref] {
				t.Errorf("%s = %s, want %s", f.line(), got, c.digest[ref])
			}
		}
	}
	f := oras("manifest", "fetch", "--plain-http", e.up(refMulti))
	if s, ok := f.should(t); ok && !bytes.Equal([]byte(s), c.manifest[refMulti]) {
		t.Errorf("%s = %s, want the upstream's bytes %s", f.line(), sha256Digest([]byte(s)), c.digest[refMulti])
	}
	// The artifact's layer by digest.
	art := parseManifest(t, refArt, c.manifest[refArt])
	if len(art.Layers) != 1 || art.Layers[0].Annotations["org.opencontainers.image.title"] != artifactTitle || art.ArtifactType != artifactType {
		t.Fatalf("upstream manifest of %s = %s, want one layer titled %s and artifactType %s", refArt, c.manifest[refArt], artifactTitle, artifactType)
	}
	bf := oras("blob", "fetch", "--plain-http", "-o", "-", e.cl.addr+"/up/test/art@"+art.Layers[0].Digest)
	if s, ok := bf.should(t); ok && s != string(c.artifact) {
		t.Errorf("%s = %q, want %q", bf.line(), s, c.artifact)
	}
	// The whole index with every platform into a layout (-r asks the
	// referrers API, falling back to the referrers tag schema on 404).
	layout := filepath.Join(dir, "layout")
	cp := oras("copy", "--from-plain-http", "-r", e.up(refMulti), "--to-oci-layout", layout+":multi")
	if _, ok := cp.should(t); ok {
		checkLayoutRef(t, cp.line(), layout, "multi", c.digest[refMulti])
		fetch := oras("manifest", "fetch", "--oci-layout", "--platform", "linux/arm64", "--descriptor", layout+":multi")
		if s, ok := fetch.should(t); ok {
			if got := descriptorDigest(t, fetch.line(), s); got != c.arm64 {
				t.Errorf("%s = %s, want %s", fetch.line(), got, c.arm64)
			}
		}
	}
}

func (e *env) testRegctl(t *testing.T) {
	c := e.c
	home := t.TempDir() // regctl keeps its config in $HOME/.regctl
	regctl := func(args ...string) cmd { return command(e.tl.regctl, args...).withEnv("HOME=" + home) }

	regctl("registry", "set", "--tls", "disabled", e.cl.addr).must(t)
	for _, ref := range []string{refMulti, refPlain, refNested, refDocker, refArt} {
		checkDigest(t, regctl("image", "digest", e.up(ref)), c.digest[ref])
	}
	checkDigest(t, regctl("image", "digest", "--platform", "linux/arm64", e.up(refMulti)), c.arm64)
	checkDigest(t, regctl("image", "digest", e.cl.addr+"/hello:multi"), c.digest[refHelloMulti])
	// The same without a config file.
	checkDigest(t, command(e.tl.regctl, "--host", "reg="+e.cl.addr+",tls=disabled", "image", "digest", e.up(refBase)).withEnv("HOME="+t.TempDir()), c.digest[refBase])

	mg := regctl("manifest", "get", "--format", "raw-body", e.up(refMulti))
	if s, ok := mg.should(t); ok && !bytes.Equal([]byte(s), c.manifest[refMulti]) {
		t.Errorf("%s = %s, want the upstream's bytes %s", mg.line(), sha256Digest([]byte(s)), c.digest[refMulti])
	}
	ag := regctl("artifact", "get", e.up(refArt))
	if s, ok := ag.should(t); ok && s != string(c.artifact) {
		t.Errorf("%s = %q, want %q", ag.line(), s, c.artifact)
	}

	dir := filepath.Join(t.TempDir(), "ocidir")
	for _, ref := range []string{refMulti, refNested} {
		tag := ref[strings.LastIndex(ref, ":")+1:]
		cp := regctl("image", "copy", e.up(ref), "ocidir://"+dir+":"+tag)
		if _, ok := cp.should(t); ok {
			checkLayoutRef(t, cp.line(), dir, tag, c.digest[ref])
			checkDigest(t, regctl("image", "digest", "ocidir://"+dir+":"+tag), c.digest[ref])
		}
	}
}

func (e *env) testSkopeo(t *testing.T) {
	c := e.c
	skopeo := func(args ...string) cmd { return command(e.tl.skopeo, args...) }
	docker := func(ref string) string { return "docker://" + e.up(ref) }

	in := skopeo("inspect", "--tls-verify=false", docker(refBase))
	if s, ok := in.should(t); ok {
		var got struct{ Digest string }
		if err := json.Unmarshal([]byte(s), &got); err != nil || got.Digest != c.digest[refBase] {
			t.Errorf("%s: Digest = %q (%v), want %s", in.line(), got.Digest, err, c.digest[refBase])
		}
	}
	raw := skopeo("inspect", "--raw", "--tls-verify=false", docker(refMulti))
	if s, ok := raw.should(t); ok && !bytes.Equal([]byte(s), c.manifest[refMulti]) {
		t.Errorf("%s = %s, want the upstream's bytes %s", raw.line(), sha256Digest([]byte(s)), c.digest[refMulti])
	}

	dir := filepath.Join(t.TempDir(), "oci")
	copyTo := func(tag string, args ...string) (cmd, bool) {
		cp := skopeo(append(append([]string{"copy"}, args...), "oci:"+dir+":"+tag)...)
		_, ok := cp.should(t)
		return cp, ok
	}
	// Single-platform OCI images are copied byte-exact.
	if cp, ok := copyTo("base", "--src-tls-verify=false", docker(refBase)); ok {
		checkLayoutRef(t, cp.line(), dir, "base", c.digest[refBase])
	}
	if cp, ok := copyTo("nested", "--src-tls-verify=false", docker(refNested)); ok {
		checkLayoutRef(t, cp.line(), dir, "nested", c.digest[refNested])
	}
	// One platform of an index: the child manifest, as is.
	if cp, ok := copyTo("arm64", "--override-os", "linux", "--override-arch", "arm64", "--src-tls-verify=false", docker(refMulti)); ok {
		checkLayoutRef(t, cp.line(), dir, "arm64", c.arm64)
	}
	// An index without artifactType descriptors is kept byte-exact with --all.
	if cp, ok := copyTo("plain", "--all", "--src-tls-verify=false", docker(refPlain)); ok {
		checkLayoutRef(t, cp.line(), dir, "plain", c.digest[refPlain])
	}
	// crane's index (artifactType in descriptors) is re-encoded by skopeo 1.9
	// (hack/CLIENTS.md): the index digest changes, the children must not.
	if cp, ok := copyTo("multi", "--all", "--src-tls-verify=false", docker(refMulti)); ok {
		d, err := layoutRef(t, dir, "multi")
		if err != nil {
			t.Errorf("%s: %v", cp.line(), err)
		} else {
			if d.Digest != c.digest[refMulti] {
				t.Logf("skopeo copy --all re-encoded the index: %s -> %s (known skopeo 1.9 quirk)", c.digest[refMulti], d.Digest)
			}
			b, err := layoutBlob(t, dir, d.Digest)
			if err != nil {
				t.Errorf("%s: %v", cp.line(), err)
			} else {
				var kids []string
				for _, m := range parseManifest(t, "skopeo's index", b).Manifests {
					kids = append(kids, m.Digest)
				}
				sort.Strings(kids)
				want := []string{c.amd64, c.arm64}
				sort.Strings(want)
				if strings.Join(kids, ",") != strings.Join(want, ",") {
					t.Errorf("%s: index children = %v, want %v", cp.line(), kids, want)
				}
			}
		}
	}
	// Docker v2 media types survive with --preserve-digests.
	if cp, ok := copyTo("docker", "--preserve-digests", "--src-tls-verify=false", docker(refDocker)); ok {
		checkLayoutRef(t, cp.line(), dir, "docker", c.digest[refDocker])
	}
}

// ctdSandbox is a private containerd daemon (hack/containerd-sandbox.sh)
// with hosts.toml mirrors to clowder for docker.io and registry.example.test.
type ctdSandbox struct {
	dir, sock, hosts string
	why              string // non-empty: why containerd cannot run here
}

// containerd returns the shared sandbox, starting it on first use (stopped
// when TestPullThrough ends); skips t when containerd cannot run here.
func (e *env) containerd(t *testing.T) *ctdSandbox {
	t.Helper()
	e.ctdOnce.Do(func() { e.ctd = e.startContainerd() })
	if e.ctd.why != "" {
		t.Skipf("containerd cannot run here: %s", e.ctd.why)
	}
	return e.ctd
}

// startContainerd runs on the parent test: it must not call t.Fatal.
func (e *env) startContainerd() *ctdSandbox {
	t := e.parent
	if os.Geteuid() != 0 {
		return &ctdSandbox{why: "the private daemon (hack/containerd-sandbox.sh) needs root"}
	}
	// Short: the socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "clowder-ctd-")
	if err != nil {
		return &ctdSandbox{why: err.Error()}
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after the daemon's stop
	sandbox := func(args ...string) cmd {
		return command(filepath.Join(e.tl.hack, "containerd-sandbox.sh"), args...).withEnv("CONTAINERD="+e.tl.containerd, "CTR="+e.tl.ctr)
	}
	if r := sandbox("start", dir).run(t); r.err != nil {
		return &ctdSandbox{why: r.String()}
	}
	t.Cleanup(func() {
		if r := sandbox("stop", dir).run(t); r.err != nil {
			t.Errorf("%s", r)
		}
	})
	for _, host := range []string{"docker.io", "registry.example.test"} {
		if r := sandbox("mirror", dir, host, "http://"+e.cl.addr).run(t); r.err != nil {
			return &ctdSandbox{why: r.String()}
		}
	}
	return &ctdSandbox{dir: dir, sock: filepath.Join(dir, "containerd.sock"), hosts: filepath.Join(dir, "certs.d")}
}

func (s *ctdSandbox) ctr(e *env, args ...string) cmd {
	return command(e.tl.ctr, append([]string{"--address", s.sock}, args...)...)
}

// imageDigest returns the digest ctr recorded for ref (ctr images ls).
func (s *ctdSandbox) imageDigest(t *testing.T, e *env, ref string) string {
	t.Helper()
	out := s.ctr(e, "images", "ls").must(t)
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	t.Errorf("ctr images ls: no %s in\n%s", ref, out)
	return ""
}

func (e *env) testContainerd(t *testing.T) {
	c := e.c
	s := e.containerd(t)
	hosts := s.hosts
	ctr := func(args ...string) cmd { return s.ctr(e, args...) }
	imageDigest := func(ref string) string { return s.imageDigest(t, e, ref) }

	// docker.io/library/hello:multi via the docker.io mirror: containerd
	// sends ?ns=docker.io, which routes to the docker.io upstream.
	ref := "docker.io/library/hello:multi"
	if r := ctr("images", "pull", "--hosts-dir", hosts, ref).run(t); r.err != nil {
		// Unpacking may be impossible here; fetching is what Clowder serves.
		if _, ok := ctr("content", "fetch", "--hosts-dir", hosts, "--all-platforms", ref).should(t); !ok {
			t.Errorf("%s", r)
		} else {
			t.Logf("ctr images pull failed but content fetch worked (unpack impossible here?): %s", r)
		}
	}
	if got := imageDigest(ref); got != "" && got != c.digest[refHelloMulti] {
		t.Errorf("ctr images pull %s: digest = %s, want %s", ref, got, c.digest[refHelloMulti])
	}
	// A single-manifest tag, native snapshotter.
	ref1 := "docker.io/library/hello:1"
	if _, ok := ctr("images", "pull", "--snapshotter", "native", "--hosts-dir", hosts, ref1).should(t); ok {
		if got := imageDigest(ref1); got != c.digest[refHello1] {
			t.Errorf("ctr images pull %s: digest = %s, want %s", ref1, got, c.digest[refHello1])
		}
	}
	// A made-up registry host, routed by ?ns= to the upstream aliased to it.
	ref2 := "registry.example.test/test/img:multi"
	if _, ok := ctr("content", "fetch", "--hosts-dir", hosts, "--all-platforms", ref2).should(t); ok {
		if got := imageDigest(ref2); got != c.digest[refMulti] {
			t.Errorf("ctr content fetch %s: digest = %s, want %s", ref2, got, c.digest[refMulti])
		}
	}

	// Clowder's access log must show containerd's ?ns= requests, routed right.
	seen := map[string]int{}
	for _, l := range e.cl.requests(t) {
		if !strings.HasPrefix(str(l, "ua"), "containerd/") {
			continue
		}
		q := str(l, "query")
		seen[q+" -> "+str(l, "upstream")]++
		if num(l, "status") >= 400 || num(l, "status") < 0 {
			t.Errorf("clowder log: containerd request %s %s?%s = %d, want 2xx (%s)", str(l, "method"), str(l, "path"), q, num(l, "status"), str(l, "error"))
		}
		if q == "" {
			t.Errorf("clowder log: containerd request %s %s without ?ns=", str(l, "method"), str(l, "path"))
		}
	}
	t.Logf("containerd requests seen by clowder (query -> upstream: count): %v", seen)
	if seen["ns=docker.io -> docker.io"] == 0 {
		t.Errorf("clowder log: requests with query ns=docker.io routed to docker.io = 0, want > 0 (seen %v)", seen)
	}
	if seen["ns=registry.example.test -> up"] == 0 {
		t.Errorf("clowder log: requests with query ns=registry.example.test routed to up = 0, want > 0 (seen %v)", seen)
	}
}

// warm pulls refs (full names through clowder) into the cache with crane.
func (e *env) warm(t *testing.T, refs ...string) {
	t.Helper()
	for _, ref := range refs {
		e.crane("pull", "--insecure", "--format", "oci", ref, filepath.Join(t.TempDir(), "warm")).must(t)
	}
}

func (e *env) testUpstreamDown(t *testing.T) {
	c := e.c
	short := e.cl.addr + "/hello:multi"
	e.warm(t, e.up(refMulti), e.up(refBase), e.up(refNested), short)
	command(e.tl.oras, "pull", "--plain-http", "-o", t.TempDir(), e.up(refArt)).must(t)
	signed, sigs := e.signed(t)
	// oras copy -r fetches the image and its referrers (and their manifests).
	command(e.tl.oras, "copy", "--from-plain-http", "-r", e.up(signed), "--to-oci-layout", filepath.Join(t.TempDir(), "signed")+":1").should(t)

	e.reg.stop(t)
	mark := len(e.cl.requests(t))

	// `up` has tag_ttl 0s (every tag request revalidates; the upstream is
	// down, so the cached answer is served); docker.io has tag_ttl 1m.
	for _, ref := range []string{refMulti, refBase, refNested} {
		checkDigest(t, e.crane("digest", "--insecure", e.up(ref)), c.digest[ref])
	}
	checkDigest(t, e.crane("digest", "--insecure", "--platform", "linux/arm64", e.up(refMulti)), c.arm64)
	checkDigest(t, e.crane("digest", "--insecure", short), c.digest[refHelloMulti])
	dir := t.TempDir()
	for i, ref := range []string{e.up(refMulti), e.up(refNested), short} {
		tarball := filepath.Join(dir, "down"+string(rune('0'+i))+".tar")
		e.crane("pull", "--insecure", ref, tarball).should(t)
	}
	layout := filepath.Join(dir, "layout")
	pull := e.crane("pull", "--insecure", "--format", "oci", e.up(refMulti), layout)
	if _, ok := pull.should(t); ok {
		checkLayoutRef(t, pull.line(), layout, "", c.digest[refMulti])
	}
	out := filepath.Join(dir, "art")
	if _, ok := command(e.tl.oras, "pull", "--plain-http", "-o", out, e.up(refArt)).should(t); ok {
		if got, err := os.ReadFile(filepath.Join(out, artifactTitle)); err != nil || !bytes.Equal(got, c.artifact) {
			t.Errorf("oras pull (upstream down) %s: %s = %q (%v), want %q", e.up(refArt), artifactTitle, got, err, c.artifact)
		}
	}

	// Clients that HEAD, list tags, or read the index the other way.
	in := command(e.tl.skopeo, "inspect", "--tls-verify=false", "docker://"+e.up(refBase))
	if out, ok := in.should(t); ok {
		var got struct{ Digest string }
		if err := json.Unmarshal([]byte(out), &got); err != nil || got.Digest != c.digest[refBase] {
			t.Errorf("%s (upstream down): Digest = %q (%v), want %s", in.line(), got.Digest, err, c.digest[refBase])
		}
	}
	checkDigest(t, command(e.tl.regctl, "--host", "reg="+e.cl.addr+",tls=disabled", "image", "digest", "--platform", "linux/arm64", e.up(refMulti)).withEnv("HOME="+t.TempDir()), c.arm64)

	// Referrers seen while the upstream was up are still listed.
	if got := e.discover(t, e.up(signed)); strings.Join(got, ",") != strings.Join(sigs, ",") {
		t.Errorf("oras discover %s (upstream down) = %v, want %v", e.up(signed), got, sigs)
	}

	// Something never cached fails, promptly (asked directly: crane retries
	// 5xx answers with backoff for ~8s).
	u := "http://" + e.cl.addr + "/v2/up/test/img/manifests/never-pulled"
	start := time.Now()
	hc := &http.Client{Timeout: 30 * time.Second}
	if resp, err := hc.Get(u); err != nil {
		t.Errorf("GET %s (upstream down, never cached): %v, want an error status", u, err)
	} else {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		took := time.Since(start)
		t.Logf("GET %s (upstream down, never cached) = %s in %s: %s", u, resp.Status, took.Round(time.Millisecond), bytes.TrimSpace(body))
		if resp.StatusCode < 400 {
			t.Errorf("GET %s (upstream down, never cached) = %s, want an error status", u, resp.Status)
		}
		if took > 10*time.Second {
			t.Errorf("GET %s (upstream down, never cached) took %s, want < 10s", u, took)
		}
	}

	caches := map[string]int{}
	for _, l := range e.cl.requests(t)[mark:] {
		if strings.Contains(str(l, "path"), "/manifests/") {
			caches[str(l, "method")+" "+str(l, "cache")+" "+strconv.Itoa(num(l, "status"))]++
		}
	}
	t.Logf("manifest requests with the upstream down (method cache status: count): %v", caches)
}

func (e *env) testCacheLayout(t *testing.T) {
	c := e.c
	root := e.cl.root
	// What the earlier subtests cached (warmed again, harmless when held).
	e.warm(t, e.up(refBase), e.up(refMulti), e.up(refPlain), e.up(refNested), e.up(refDocker), e.cl.addr+"/hello:multi")
	command(e.tl.oras, "pull", "--plain-http", "-o", t.TempDir(), e.up(refArt)).must(t)

	// The layout itself, checked in Go: marker file, index, every named blob.
	b, err := os.ReadFile(filepath.Join(root, "oci-layout"))
	if err != nil || !strings.Contains(string(b), `"imageLayoutVersion":"1.0.0"`) && !strings.Contains(string(b), `"imageLayoutVersion": "1.0.0"`) {
		t.Errorf("%s/oci-layout = %q (%v), want imageLayoutVersion 1.0.0", root, b, err)
	}
	names := map[string]descriptor{}
	for _, d := range layoutIndex(t, root) {
		n := d.Annotations[refNameKey]
		if n == "" {
			t.Errorf("%s/index.json: descriptor %s has no %s", root, d.Digest, refNameKey)
		}
		names[n] = d
		if bb, err := layoutBlob(t, root, d.Digest); err != nil {
			t.Errorf("%s/index.json names %s: %v", root, n, err)
		} else if int64(len(bb)) != d.Size {
			t.Errorf("%s/index.json names %s: blob %s is %d bytes, descriptor says %d", root, n, d.Digest, len(bb), d.Size)
		}
	}
	want := map[string]string{
		"up/" + refBase:              c.digest[refBase],
		"up/" + refMulti:             c.digest[refMulti],
		"up/" + refPlain:             c.digest[refPlain],
		"up/" + refNested:            c.digest[refNested],
		"up/" + refDocker:            c.digest[refDocker],
		"up/" + refArt:               c.digest[refArt],
		"docker.io/" + refHelloMulti: c.digest[refHelloMulti],
		"up/test/img@" + c.arm64:     c.arm64, // fetched by digest only
	}
	var sorted []string
	for n := range want {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		if d, ok := names[n]; !ok {
			t.Errorf("%s/index.json: no %s = %q, want %s", root, refNameKey, n, want[n])
		} else if d.Digest != want[n] {
			t.Errorf("%s/index.json: %s = %s, want %s", root, n, d.Digest, want[n])
		}
	}

	skopeo := func(args ...string) cmd { return command(e.tl.skopeo, args...) }
	oras := func(args ...string) cmd { return command(e.tl.oras, args...) }
	for _, n := range sorted {
		isDocker := n == "up/"+refDocker
		// skopeo: oci:PATH:REFERENCE, the reference being index.json's ref.name.
		raw := skopeo("inspect", "--raw", "oci:"+root+":"+n)
		if r := raw.run(t); r.err != nil {
			if isDocker {
				// image-spec: descriptors of unknown media type in index.json
				// MUST be ignored; skopeo 1.9 only looks at OCI ones.
				t.Logf("skopeo cannot see a Docker v2 manifest in an OCI layout (known): %s", oneLine(r.stderr))
			} else {
				t.Errorf("%s", r)
			}
		} else if got := sha256Digest([]byte(r.stdout)); got != want[n] {
			t.Errorf("sha256(%s) = %s, want %s", raw.line(), got, want[n])
		}

		// oras: LAYOUT:TAG splits at the LAST colon, so a name with a tag
		// cannot be addressed that way; LAYOUT@NAME passes the name whole
		// (split at the last @), which digest-named entries cannot use.
		ref := root + "@" + n
		if strings.Contains(n, "@") {
			ref = root + "@" + want[n]
		}
		f := oras("manifest", "fetch", "--oci-layout", ref)
		if out, ok := f.should(t); ok {
			if got := sha256Digest([]byte(out)); got != want[n] {
				t.Errorf("sha256(%s) = %s, want %s", f.line(), got, want[n])
			}
		}
	}
	// The documented form, for the record.
	colon := oras("manifest", "fetch", "--oci-layout", "--descriptor", root+":up/"+refBase)
	if r := colon.run(t); r.err != nil {
		t.Logf("oras cannot address ref.name %q as LAYOUT:NAME (splits at the last ':'): %s", "up/"+refBase, oneLine(r.stderr))
	} else if got := descriptorDigest(t, colon.line(), r.stdout); got != c.digest[refBase] {
		t.Errorf("%s = %s, want %s", colon.line(), got, c.digest[refBase])
	}

	// Whole images out of the layout: every blob read and verified.
	in := skopeo("inspect", "oci:"+root+":up/"+refMulti) // the linux/amd64 image's config
	if s, ok := in.should(t); ok {
		var got struct{ Digest, Architecture string }
		if err := json.Unmarshal([]byte(s), &got); err != nil || got.Digest != c.digest[refMulti] || got.Architecture != "amd64" {
			t.Errorf("%s: Digest, Architecture = %q, %q (%v), want %s, amd64", in.line(), got.Digest, got.Architecture, err, c.digest[refMulti])
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	cp := skopeo("copy", "oci:"+root+":up/"+refNested, "oci:"+out+":nested")
	if _, ok := cp.should(t); ok {
		checkLayoutRef(t, cp.line(), out, "nested", c.digest[refNested])
	}
	cp = skopeo("copy", "--all", "oci:"+root+":docker.io/"+refHelloMulti, "oci:"+out+":hello")
	cp.should(t)
	oc := oras("copy", "--from-oci-layout", root+"@up/"+refMulti, "--to-oci-layout", out+":multi")
	if _, ok := oc.should(t); ok {
		checkLayoutRef(t, oc.line(), out, "multi", c.digest[refMulti])
	}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

const refSigned = "test/signed:1" // base, with an oras-attached referrer

// signed attaches (once) a referrer to refSigned on the upstream and returns
// refSigned and the referrer digests `oras discover` sees on the upstream.
func (e *env) signed(t *testing.T) (string, []string) {
	t.Helper()
	e.signOnce.Do(func() {
		r := e.reg.addr + "/" + refSigned
		e.crane("copy", "--insecure", e.reg.addr+"/"+refBase, r).must(t)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "sig.txt"), []byte("signed by clowder e2e\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		command(e.tl.oras, "attach", "--plain-http", r, "--artifact-type", "application/vnd.clowder.sig", "sig.txt:text/plain").inDir(dir).must(t)
		e.sigs = e.discover(t, r)
		if len(e.sigs) != 1 {
			t.Fatalf("oras discover --plain-http %s = %v, want one referrer", r, e.sigs)
		}
	})
	if len(e.sigs) != 1 {
		t.Fatalf("no referrer attached upstream (an earlier attempt failed)")
	}
	return refSigned, e.sigs
}

// discover returns the sorted digests of ref's referrers, per oras discover.
func (e *env) discover(t *testing.T, ref string) []string {
	t.Helper()
	d := command(e.tl.oras, "discover", "--plain-http", "--format", "json", ref)
	out, ok := d.should(t)
	if !ok {
		return nil
	}
	var tree struct {
		Digest    string       `json:"digest"`
		Referrers []descriptor `json:"referrers"`
	}
	if err := json.Unmarshal([]byte(out), &tree); err != nil {
		t.Errorf("%s: %v\n%s", d.line(), err, out)
		return nil
	}
	got := []string{}
	for _, r := range tree.Referrers {
		got = append(got, r.Digest)
	}
	sort.Strings(got)
	return got
}

// testReferrers: an image's referrers (signatures, SBOMs) are visible through
// Clowder as they are on the upstream. The distribution registry (v3.1.2)
// has no referrers API (404), so oras attach used the referrers tag schema
// (tag sha256-<hex>) and oras discover, direct, falls back to it.
func (e *env) testReferrers(t *testing.T) {
	signed, want := e.signed(t)
	if got := e.discover(t, e.up(signed)); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("oras discover --plain-http --format json %s = referrers %v, want %v (as on the upstream)", e.up(signed), got, want)
	}
	// The referrers tag schema (what oras attach wrote, and what clients
	// fall back to on a 404 from the referrers API) goes through as a tag.
	dgst := e.c.digest[refBase]
	fallback := "test/signed:sha256-" + strings.TrimPrefix(dgst, "sha256:")
	direct := strings.TrimSpace(e.crane("digest", "--insecure", e.reg.addr+"/"+fallback).must(t))
	checkDigest(t, e.crane("digest", "--insecure", e.up(fallback)), direct)
	// What Clowder answers on the referrers API itself.
	u := "http://" + e.cl.addr + "/v2/up/test/signed/referrers/" + dgst
	if resp, err := http.Get(u); err == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		ru := "http://" + e.reg.addr + "/v2/test/signed/referrers/" + dgst
		var upStatus string
		if r2, err := http.Get(ru); err == nil {
			upStatus = r2.Status
			r2.Body.Close()
		}
		t.Logf("GET %s = %s %s (upstream GET %s = %s)", u, resp.Status, bytes.TrimSpace(body), ru, upStatus)
	}
	// oras copy -r carries the referrer along.
	layout := filepath.Join(t.TempDir(), "signed")
	if _, ok := command(e.tl.oras, "copy", "--from-plain-http", "-r", e.up(signed), "--to-oci-layout", layout+":1").should(t); ok {
		d := command(e.tl.oras, "discover", "--oci-layout", "--format", "json", layout+":1")
		if out, ok := d.should(t); ok && !strings.Contains(out, want[0]) {
			t.Errorf("%s = %s, want referrer %s (copied with oras copy -r through clowder)", d.line(), out, want[0])
		}
	}
}

// testTagMoves: a tag that moves upstream is followed at once by `up`
// (tag_ttl 0s) and not before its TTL by `docker.io` (tag_ttl 1m).
func (e *env) testTagMoves(t *testing.T) {
	r := e.reg.addr + "/test/img:moving"
	viaUp := e.up("test/img:moving")
	viaHub := e.cl.addr + "/docker.io/test/img:moving"

	e.crane("copy", "--insecure", e.reg.addr+"/"+refAmd64, r).must(t)
	first := e.c.digest[refAmd64]
	checkDigest(t, e.crane("digest", "--insecure", viaUp), first)
	checkDigest(t, e.crane("digest", "--insecure", viaHub), first)
	e.warm(t, viaUp)

	e.crane("copy", "--insecure", e.reg.addr+"/"+refArm64, r).must(t)
	second := e.c.digest[refArm64]
	checkDigest(t, e.crane("digest", "--insecure", r), second)
	checkDigest(t, e.crane("digest", "--insecure", viaUp), second)
	m := e.crane("manifest", "--insecure", viaUp)
	if out, ok := m.should(t); ok && sha256Digest([]byte(out)) != second {
		t.Errorf("sha256(%s) = %s, want %s", m.line(), sha256Digest([]byte(out)), second)
	}
	checkDigest(t, e.crane("digest", "--insecure", viaHub), first) // within its 1m TTL
	checkLayoutRef(t, "cache after the tag moved", e.cl.root, "up/test/img:moving", second)
}

// testConcurrentCold: several real clients pull the same never-cached image
// at once; every one gets it whole.
func (e *env) testConcurrentCold(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.tar")
	writeTar(t, big, map[string][]byte{"big.bin": randomBytes(t, 6<<20)})
	r := e.reg.addr + "/test/cold:1"
	e.crane("append", "--insecure", "--oci-empty-base", "-f", big, "-t", r).must(t)
	want := strings.TrimSpace(e.crane("digest", "--insecure", r).must(t))
	via := e.up("test/cold:1")

	// Four crane and one skopeo, started together; checked once all are done
	// (t.Fatal must not run off the test's goroutine).
	type job struct {
		x      cmd
		layout string
		ref    string // name in the layout's index.json
		r      result
	}
	var jobs []*job
	for i := 0; i < 4; i++ {
		out := filepath.Join(dir, fmt.Sprintf("crane%d", i))
		jobs = append(jobs, &job{x: e.crane("pull", "--insecure", "--format", "oci", via, out), layout: out})
	}
	sk := filepath.Join(dir, "skopeo")
	jobs = append(jobs, &job{x: command(e.tl.skopeo, "copy", "--src-tls-verify=false", "docker://"+via, "oci:"+sk+":1"), layout: sk, ref: "1"})
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() { defer wg.Done(); j.r = j.x.run(t) }()
	}
	wg.Wait()
	for _, j := range jobs {
		if j.r.err != nil {
			t.Errorf("%s", j.r)
			continue
		}
		checkLayoutRef(t, j.x.line(), j.layout, j.ref, want)
	}
}

// testNamespaceRouting: with ?ns=, the path is the repository on that
// registry, even when its first segment happens to be an upstream's name.
// containerd pulling docker.io/up/shadow:1 asks Docker Hub's repository
// up/shadow; the upstream named `up` has its own, different, shadow:1.
func (e *env) testNamespaceRouting(t *testing.T) {
	s := e.containerd(t)
	// On the registry: repository up/shadow (what docker.io/up/shadow means)
	// and repository shadow (what upstream `up` calls shadow).
	e.crane("copy", "--insecure", e.reg.addr+"/"+refAmd64, e.reg.addr+"/up/shadow:1").must(t)
	e.crane("copy", "--insecure", e.reg.addr+"/"+refArm64, e.reg.addr+"/shadow:1").must(t)
	want := e.c.digest[refAmd64]

	// Clowder's own path syntax still means upstream `up`, repository shadow.
	checkDigest(t, e.crane("digest", "--insecure", e.cl.addr+"/up/shadow:1"), e.c.digest[refArm64])
	checkDigest(t, e.crane("digest", "--insecure", e.cl.addr+"/docker.io/up/shadow:1"), want)

	ref := "docker.io/up/shadow:1"
	mark := len(e.cl.requests(t))
	r := s.ctr(e, "content", "fetch", "--hosts-dir", s.hosts, "--all-platforms", ref).run(t)
	var routed []string
	for _, l := range e.cl.requests(t)[mark:] {
		routed = append(routed, fmt.Sprintf("%s %s?%s -> upstream %s: %d", str(l, "method"), str(l, "path"), str(l, "query"), str(l, "upstream"), num(l, "status")))
	}
	if r.err != nil {
		t.Errorf("%s\nclowder saw:\n%s", r, strings.Join(routed, "\n"))
		return
	}
	if got := s.imageDigest(t, e, ref); got != want {
		t.Errorf("ctr content fetch %s: digest = %s, want %s (Docker Hub's up/shadow:1, not upstream up's shadow:1 %s)\nclowder saw:\n%s",
			ref, got, want, e.c.digest[refArm64], strings.Join(routed, "\n"))
	}
}

// testNotFound: what is not upstream is 404 with the OCI error code, is
// not remembered as missing, and a bad ?ns= is refused.
func (e *env) testNotFound(t *testing.T) {
	get := func(method, path string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+e.cl.addr+path, nil)
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", method, path, err)
			return 0, "", nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b), resp.Header
	}
	expect := func(method, path string, status int, code string) {
		t.Helper()
		st, body, _ := get(method, path)
		if st != status || (code != "" && method != http.MethodHead && !strings.Contains(body, `"`+code+`"`)) {
			t.Errorf("%s %s = %d %s, want %d %s", method, path, st, strings.TrimSpace(body), status, code)
		}
	}
	zero := "sha256:" + strings.Repeat("0", 64)
	expect("GET", "/v2/up/test/img/manifests/later", 404, "MANIFEST_UNKNOWN")
	expect("HEAD", "/v2/up/test/img/manifests/later", 404, "")
	expect("GET", "/v2/up/no/such/repo/manifests/1", 404, "")
	expect("GET", "/v2/up/test/img/manifests/"+zero, 404, "MANIFEST_UNKNOWN")
	expect("GET", "/v2/up/test/img/blobs/"+zero, 404, "BLOB_UNKNOWN")
	expect("GET", "/v2/test/img/manifests/base?ns=unknown.example.test", 404, "NAME_UNKNOWN")
	if r := e.crane("digest", "--insecure", e.up("test/img:later")).run(t); r.err == nil || !strings.Contains(r.stderr, "MANIFEST_UNKNOWN") {
		t.Errorf("%s = %v, want MANIFEST_UNKNOWN\n%s", r.line, r.err, r)
	}
	// The tag appears upstream: the next request sees it (no negative cache
	// on `up`, tag_ttl 0s).
	e.crane("copy", "--insecure", e.reg.addr+"/"+refBase, e.reg.addr+"/test/img:later").must(t)
	checkDigest(t, e.crane("digest", "--insecure", e.up("test/img:later")), e.c.digest[refBase])

	// A held blob: HEAD answers its size and digest.
	layer := parseManifest(t, refBase, e.c.manifest[refBase]).Layers[0]
	e.warm(t, e.up(refBase))
	st, _, h := get("HEAD", "/v2/up/test/img/blobs/"+layer.Digest)
	if st != 200 || h.Get("Content-Length") != fmt.Sprint(layer.Size) || h.Get("Docker-Content-Digest") != layer.Digest {
		t.Errorf("HEAD /v2/up/test/img/blobs/%s = %d, Content-Length %q, Docker-Content-Digest %q; want 200, %d, %s",
			layer.Digest, st, h.Get("Content-Length"), h.Get("Docker-Content-Digest"), layer.Size, layer.Digest)
	}
}

// testUpstreamHung: the upstream accepts connections but never answers.
// A cached tag on `up` (tag_ttl 0s) is served after the bounded
// revalidation wait (revalidate_timeout, default 5s); one on docker.io
// within its TTL (1m) at once.
func (e *env) testUpstreamHung(t *testing.T) {
	short := e.cl.addr + "/hello:multi"
	e.warm(t, e.up(refBase), short)
	resume := e.reg.pause(t)
	defer resume()

	timed := func(c cmd, want string, max time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		checkDigest(t, c, want)
		took := time.Since(start)
		if took > max {
			t.Errorf("%s (upstream hung) took %s, want < %s", c.line(), took.Round(time.Millisecond), max)
		}
		return took
	}
	took := timed(e.crane("digest", "--insecure", e.up(refBase)), e.c.digest[refBase], 20*time.Second)
	t.Logf("cached tag with tag_ttl 0s, upstream hung: answered in %s", took.Round(time.Millisecond))
	timed(e.crane("digest", "--insecure", short), e.c.digest[refHelloMulti], 3*time.Second)
	// Blobs held are served without asking the upstream at all.
	dir := filepath.Join(t.TempDir(), "hung")
	timed(e.crane("digest", "--insecure", "--platform", "linux/arm64", short), e.c.arm64, 3*time.Second)
	start := time.Now()
	if _, ok := e.crane("pull", "--insecure", "--format", "oci", short, dir).should(t); ok {
		checkLayoutRef(t, "crane pull (upstream hung)", dir, "", e.c.digest[refHelloMulti])
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("crane pull --format oci %s (upstream hung, all cached, tag within TTL) took %s, want < 5s", short, took.Round(time.Millisecond))
	}
}
