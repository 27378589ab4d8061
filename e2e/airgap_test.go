package e2e

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestAirGap: content pulled from a real CNCF distribution registry through
// clowder (crane through `clowder serve`, and `clowder pull`) into root A is
// carried as `clowder export NAMES -o seed.tar`, `clowder import seed.tar`
// fills an EMPTY root B, and `clowder serve` on B, with the upstream
// registry stopped, serves crane exactly the upstream's digests. The tar is
// a standard OCI layout archive: skopeo reads names out of it
// (oci-archive:seed.tar:NAME) with the upstream's digests.
func TestAirGap(t *testing.T) {
	tl := needTools(t)
	reg := startRegistry(t, tl)
	c := pushContent(t, tl, reg.addr)

	work := t.TempDir()
	rootA := filepath.Join(work, "site-a")
	rootB := filepath.Join(work, "site-b") // does not exist until the import
	cfg := writeConfig(t, work, reg.addr, filepath.Join(work, "config-root"))
	crane := func(args ...string) cmd { return command(tl.crane, args...) }
	skopeo := func(args ...string) cmd { return command(tl.skopeo, args...) }
	clowderAt := func(root string, args ...string) cmd {
		return command(tl.clowder, append([]string{args[0], "--config", cfg, "--root", root}, args[1:]...)...)
	}

	// Site A, connected: crane pulls through clowder serve (an image, a
	// multi-platform index with all platforms, a Docker-Hub-style short
	// name); clowder pull, on the same root while it serves, the
	// byte-exact index.
	clA := startClowder(t, tl, cfg, filepath.Join(work, "clowder-a.log"), "--root", rootA)
	dir := t.TempDir()
	crane("pull", "--insecure", "--format", "oci", clA.addr+"/up/"+refNested, filepath.Join(dir, "a-nested")).must(t)
	crane("pull", "--insecure", "--format", "oci", clA.addr+"/up/"+refMulti, filepath.Join(dir, "a-multi")).must(t)
	crane("pull", "--insecure", clA.addr+"/hello:1", filepath.Join(dir, "a-hello1.tar")).must(t)
	if out := clowderAt(rootA, "pull", "up/"+refPlain).must(t); !strings.Contains(out, "pulled up/test/img@"+c.digest[refPlain]) {
		t.Errorf("clowder pull up/%s = %q, want it to say pulled up/test/img@%s", refPlain, out, c.digest[refPlain])
	}
	clA.p.stop()

	names := map[string]string{ // full name in index.json -> upstream digest
		"up/" + refNested:        c.digest[refNested],
		"up/" + refMulti:         c.digest[refMulti],
		"up/" + refPlain:         c.digest[refPlain],
		"docker.io/" + refHello1: c.digest[refHello1],
	}
	for n, want := range names {
		checkLayoutRef(t, "site A", rootA, n, want)
	}

	// Carry: export (short and full names both resolve), then the tar is an
	// OCI image layout archive naming exactly what was exported.
	seed := filepath.Join(work, "seed.tar")
	if out := clowderAt(rootA, "export", "up/"+refNested, "up/"+refMulti, "up/"+refPlain, "hello:1", "-o", seed).must(t); !strings.Contains(out, "exported 4 names") {
		t.Errorf("clowder export = %q, want it to say exported 4 names", out)
	}
	arch := readArchive(t, seed)
	if string(arch.files["oci-layout"]) == "" || !strings.Contains(string(arch.files["oci-layout"]), `"imageLayoutVersion":"1.0.0"`) {
		t.Errorf("%s: oci-layout = %q, want {\"imageLayoutVersion\":\"1.0.0\"}", seed, arch.files["oci-layout"])
	}
	idx := parseManifest(t, seed+":index.json", arch.files["index.json"])
	got := map[string]string{}
	for _, d := range idx.Manifests {
		got[d.Annotations[refNameKey]] = d.Digest
	}
	if !equalMaps(got, names) {
		t.Errorf("%s: index.json names = %v, want %v", seed, got, names)
	}
	for p, b := range arch.files {
		if hexd, ok := strings.CutPrefix(p, "blobs/sha256/"); ok && sha256Digest(b) != "sha256:"+hexd {
			t.Errorf("%s: %s hashes to %s", seed, p, sha256Digest(b))
		}
	}
	// Every child and blob of every name is in the tar.
	for n, d := range names {
		checkArchiveComplete(t, seed, arch, n, d)
	}

	// Site B: the upstream is gone for good; the tar goes into an empty root.
	reg.stop(t)
	if _, err := os.Stat(rootB); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("root B %s exists before the import (%v)", rootB, err)
	}
	out := clowderAt(rootB, "import", seed).must(t)
	var imported []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if n, ok := strings.CutPrefix(l, "imported "); ok {
			imported = append(imported, n)
		}
	}
	sort.Strings(imported)
	if want := sortedKeys(names); strings.Join(imported, " ") != strings.Join(want, " ") {
		t.Errorf("clowder import %s: imported %v, want %v\n%s", seed, imported, want, out)
	}
	for n, want := range names {
		checkLayoutRef(t, "site B after import", rootB, n, want)
	}
	if out, ok := clowderAt(rootB, "verify").should(t); ok && !strings.Contains(out, ", 0 bad") {
		t.Errorf("clowder verify on root B = %q, want 0 bad", out)
	}
	if n := len(arch.blobs()); n != countFiles(t, filepath.Join(rootB, "blobs", "sha256")) {
		t.Errorf("root B holds %d sha256 blobs, the archive %d", countFiles(t, filepath.Join(rootB, "blobs", "sha256")), n)
	}

	clB := startClowder(t, tl, cfg, filepath.Join(work, "clowder-b.log"), "--root", rootB)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("clowder (site B) log, last lines:\n%s", tail(clB.p.log(), 25))
		}
	})
	up := func(ref string) string { return clB.addr + "/up/" + ref }
	checkDigest(t, crane("digest", "--insecure", up(refNested)), c.digest[refNested])
	checkDigest(t, crane("digest", "--insecure", up(refMulti)), c.digest[refMulti])
	checkDigest(t, crane("digest", "--insecure", "--platform", "linux/arm64", up(refMulti)), c.arm64)
	checkDigest(t, crane("digest", "--insecure", up(refPlain)), c.digest[refPlain])
	checkDigest(t, crane("digest", "--insecure", clB.addr+"/hello:1"), c.digest[refHello1])
	for _, p := range []struct{ ref, name, want string }{
		{up(refNested), "nested", c.digest[refNested]},
		{up(refMulti), "multi", c.digest[refMulti]}, // every platform, every blob
		{up(refPlain), "plain", c.digest[refPlain]},
		{clB.addr + "/hello:1", "hello1", c.digest[refHello1]},
	} {
		out := filepath.Join(dir, "b-"+p.name)
		x := crane("pull", "--insecure", "--format", "oci", p.ref, out)
		if _, ok := x.should(t); ok {
			checkLayoutRef(t, x.line(), out, "", p.want)
		}
	}
	// The docker-tarball form reads every layer too (and checks diff IDs).
	crane("pull", "--insecure", up(refNested), filepath.Join(dir, "b-nested.tar")).should(t)
	crane("pull", "--insecure", "--platform", "linux/arm64", up(refMulti), filepath.Join(dir, "b-arm64.tar")).should(t)
	reqs := clB.requests(t)
	if len(reqs) == 0 {
		t.Errorf("clowder (site B) logged no requests")
	}
	for _, l := range reqs {
		if st := num(l, "status"); st < 200 || st >= 400 {
			t.Errorf("clowder (site B, upstream stopped): %s %s = %d, want 2xx (%s)", str(l, "method"), str(l, "path"), st, str(l, "error"))
		}
	}

	// Standard OCI layout archive: skopeo addresses index.json's ref.name
	// (with '/' and ':') as oci-archive:FILE:NAME.
	for _, n := range sortedKeys(names) {
		raw := skopeo("inspect", "--raw", "oci-archive:"+seed+":"+n)
		if s, ok := raw.should(t); ok && sha256Digest([]byte(s)) != names[n] {
			t.Errorf("sha256(%s) = %s, want %s", raw.line(), sha256Digest([]byte(s)), names[n])
		}
	}
	in := skopeo("inspect", "oci-archive:"+seed+":up/"+refNested)
	if s, ok := in.should(t); ok {
		var v struct{ Digest string }
		if err := json.Unmarshal([]byte(s), &v); err != nil || v.Digest != c.digest[refNested] {
			t.Errorf("%s: Digest = %q (%v), want %s", in.line(), v.Digest, err, c.digest[refNested])
		}
	}
	sk := filepath.Join(dir, "skopeo")
	for _, p := range []struct {
		name, tag, want string
		all             bool
	}{
		{"up/" + refNested, "nested", c.digest[refNested], false}, // single-platform image
		{"docker.io/" + refHello1, "hello1", c.digest[refHello1], false},
		{"up/" + refPlain, "plain", c.digest[refPlain], true}, // an index skopeo keeps byte-exact
	} {
		args := []string{"copy"}
		if p.all {
			args = append(args, "--all")
		}
		cp := skopeo(append(args, "oci-archive:"+seed+":"+p.name, "oci:"+sk+":"+p.tag)...)
		if _, ok := cp.should(t); ok {
			checkLayoutRef(t, cp.line(), sk, p.tag, p.want)
		}
	}
	// crane's index (artifactType in its descriptors) is re-encoded by
	// skopeo 1.9 (hack/CLIENTS.md): its children must come out unchanged.
	cp := skopeo("copy", "--all", "oci-archive:"+seed+":up/"+refMulti, "oci:"+sk+":multi")
	if _, ok := cp.should(t); ok {
		d, err := layoutRef(t, sk, "multi")
		if err != nil {
			t.Errorf("%s: %v", cp.line(), err)
		} else {
			if d.Digest != c.digest[refMulti] {
				t.Logf("%s re-encoded the index: %s -> %s (known skopeo 1.9 quirk)", cp.line(), c.digest[refMulti], d.Digest)
			}
			b, err := layoutBlob(t, sk, d.Digest)
			if err != nil {
				t.Errorf("%s: %v", cp.line(), err)
			} else {
				var children []string
				for _, m := range parseManifest(t, "skopeo's index", b).Manifests {
					children = append(children, m.Digest)
				}
				if want := []string{c.amd64, c.arm64}; strings.Join(children, " ") != strings.Join(want, " ") {
					t.Errorf("%s: children = %v, want %v", cp.line(), children, want)
				}
			}
		}
	}
}

// archive is an OCI layout tar read into memory (test archives are small).
type archive struct {
	files map[string][]byte
}

func (a archive) blobs() []string {
	var out []string
	for p := range a.files {
		if strings.HasPrefix(p, "blobs/sha256/") {
			out = append(out, p)
		}
	}
	return out
}

func readArchive(t *testing.T, path string) archive {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := archive{files: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return a
		}
		if err != nil {
			t.Fatalf("%s: not a tar: %v", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(h.Name, "./")
		if _, dup := a.files[name]; dup {
			t.Errorf("%s: %s twice", path, name)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, name, err)
		}
		a.files[name] = b
	}
}

// checkArchiveComplete walks name's manifest (and an index's children) in
// the archive: every referenced blob must be in it with its size.
func checkArchiveComplete(t *testing.T, path string, a archive, name, dgst string) {
	t.Helper()
	var walk func(d descriptor, depth int)
	walk = func(d descriptor, depth int) {
		b, ok := a.files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Errorf("%s: %s references %s (%s), not in the archive", path, name, d.Digest, d.MediaType)
			return
		}
		if d.Size != 0 && int64(len(b)) != d.Size {
			t.Errorf("%s: %s: blob %s is %d bytes, want %d", path, name, d.Digest, len(b), d.Size)
		}
		if depth > 0 && !strings.Contains(d.MediaType, "manifest") && !strings.Contains(d.MediaType, "index") {
			return
		}
		m := parseManifest(t, path+":"+d.Digest, b)
		for _, x := range m.Manifests {
			walk(x, depth+1)
		}
		if m.Config != nil {
			walk(*m.Config, depth+1)
		}
		for _, x := range m.Layers {
			walk(x, depth+1)
		}
	}
	walk(descriptor{Digest: dgst}, 0)
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !e.IsDir() {
			n++
		}
	}
	return n
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
