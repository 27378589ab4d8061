package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreseed: `clowder pull` fills an empty root while the upstream is up
// (air-gap pre-seed); then `clowder serve` on that root, with the upstream
// gone, serves real clients.
func TestPreseed(t *testing.T) {
	tl := needTools(t)
	reg := startRegistry(t, tl)
	c := pushContent(t, tl, reg.addr)

	work := t.TempDir()
	configRoot := filepath.Join(work, "config-root") // --root must win over it
	root := filepath.Join(work, "seeded")
	cfg := writeConfig(t, work, reg.addr, configRoot)

	pull := func(args ...string) cmd {
		return command(tl.clowder, append([]string{"pull", "--config", cfg, "--root", root}, args...)...)
	}
	for _, p := range []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"up/" + refMulti}, "pulled up/test/img@" + c.digest[refMulti]},
		{[]string{"up/" + refNested}, "pulled up/team/a/b@" + c.digest[refNested]},
		{[]string{"up/" + refArt}, "pulled up/test/art@" + c.digest[refArt]},
		// Docker-style short names: docker.io (the default) adds library/.
		{[]string{"hello:1"}, "pulled docker.io/library/hello@" + c.digest[refHello1]},
		{[]string{"--platform", "linux/arm64", "hello:multi"}, "pulled docker.io/library/hello@" + c.digest[refHelloMulti]},
	} {
		x := pull(p.args...)
		if out, ok := x.should(t); ok && !strings.Contains(out, p.want) {
			t.Errorf("%s = %q, want it to say %q", x.line(), out, p.want)
		}
	}
	if _, err := os.Stat(configRoot); err == nil {
		t.Errorf("clowder pull --root %s also created the config's root %s", root, configRoot)
	}
	for name, want := range map[string]string{
		"up/" + refMulti:             c.digest[refMulti],
		"up/" + refNested:            c.digest[refNested],
		"up/" + refArt:               c.digest[refArt],
		"docker.io/" + refHello1:     c.digest[refHello1],
		"docker.io/" + refHelloMulti: c.digest[refHelloMulti],
	} {
		checkLayoutRef(t, "clowder pull", root, name, want)
	}

	reg.stop(t)

	cl := startClowder(t, tl, cfg, filepath.Join(work, "clowder.log"), "--root", root)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("clowder log (%s), last lines:\n%s", cl.p.logPath, tail(cl.p.log(), 25))
		}
	})
	if cl.root != root {
		t.Errorf("clowder serve --root %s: serving root %s", root, cl.root)
	}
	crane := func(args ...string) cmd { return command(tl.crane, args...) }
	up := func(ref string) string { return cl.addr + "/up/" + ref }

	checkDigest(t, crane("digest", "--insecure", up(refMulti)), c.digest[refMulti])
	checkDigest(t, crane("digest", "--insecure", up(refNested)), c.digest[refNested])
	checkDigest(t, crane("digest", "--insecure", cl.addr+"/hello:1"), c.digest[refHello1])
	checkDigest(t, crane("digest", "--insecure", "--platform", "linux/arm64", cl.addr+"/hello:multi"), c.arm64)

	dir := t.TempDir()
	layout := filepath.Join(dir, "multi")
	x := crane("pull", "--insecure", "--format", "oci", up(refMulti), layout) // every platform
	if _, ok := x.should(t); ok {
		checkLayoutRef(t, x.line(), layout, "", c.digest[refMulti])
	}
	crane("pull", "--insecure", up(refMulti), filepath.Join(dir, "multi.tar")).should(t)
	crane("pull", "--insecure", up(refNested), filepath.Join(dir, "nested.tar")).should(t)
	crane("pull", "--insecure", cl.addr+"/hello:1", filepath.Join(dir, "hello1.tar")).should(t)
	crane("pull", "--insecure", "--platform", "linux/arm64", cl.addr+"/hello:multi", filepath.Join(dir, "hello-arm64.tar")).should(t)

	out := filepath.Join(dir, "art")
	if _, ok := command(tl.oras, "pull", "--plain-http", "-o", out, up(refArt)).should(t); ok {
		if got, err := os.ReadFile(filepath.Join(out, artifactTitle)); err != nil || string(got) != string(c.artifact) {
			t.Errorf("oras pull --plain-http -o %s %s: %s = %q (%v), want %q", out, up(refArt), artifactTitle, got, err, c.artifact)
		}
	}

	for _, l := range cl.requests(t) {
		if st := num(l, "status"); st >= 400 || st < 0 {
			t.Errorf("clowder log (pre-seeded, upstream down): %s %s = %d, want 2xx (%s)", str(l, "method"), str(l, "path"), st, str(l, "error"))
		}
	}
}
