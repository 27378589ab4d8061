package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cmdTimeout bounds every client command; procStartTimeout bounds the wait
// for a server process to answer.
const (
	cmdTimeout       = 90 * time.Second
	procStartTimeout = 20 * time.Second
)

// tools are the absolute paths of the binaries the tests drive.
type tools struct {
	clowder, crane, oras, regctl, registry, skopeo, ctr, containerd, nginx string
	hack                                                                   string // the repo's hack/ directory
}

// needTools skips unless CLOWDER_E2E is set; then every tool must exist.
func needTools(t *testing.T) *tools {
	t.Helper()
	if os.Getenv("CLOWDER_E2E") == "" {
		t.Skip("end-to-end tests: set CLOWDER_E2E=1 and CLOWDER_BIN (make e2e)")
	}
	binDir := os.Getenv("TOOLS_BIN")
	if binDir == "" {
		home, _ := os.UserHomeDir()
		binDir = filepath.Join(home, ".cache", "clowder", "tools", "bin")
	}
	find := func(envVar, name string) string {
		p := os.Getenv(envVar)
		if p == "" {
			p = filepath.Join(binDir, name)
			if envVar == "CLOWDER_BIN" {
				p = filepath.Join("..", "bin", "clowder") // make build's default BIN
			}
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("tool %s: %s=%q is not an executable (%v); run `make tools` or `make e2e`", name, envVar, p, err)
		}
		return p
	}
	tl := &tools{
		clowder:    find("CLOWDER_BIN", "clowder"),
		crane:      find("CRANE", "crane"),
		oras:       find("ORAS", "oras"),
		regctl:     find("REGCTL", "regctl"),
		registry:   find("REGISTRY", "registry"),
		skopeo:     find("SKOPEO", "skopeo"),
		ctr:        find("CTR", "ctr"),
		containerd: find("CONTAINERD", "containerd"),
		nginx:      find("NGINX", "nginx"),
	}
	hack, err := filepath.Abs(filepath.Join("..", "hack"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(hack, "containerd-sandbox.sh")); err != nil {
		t.Fatalf("hack scripts: %v", err)
	}
	tl.hack = hack
	return tl
}

// result is one finished command.
type result struct {
	line           string // the command line as logged (binaries by base name)
	stdout, stderr string
	err            error
	took           time.Duration
}

// String shows everything about a command for a failure message.
func (r result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v (after %s)", r.line, r.err, r.took.Round(time.Millisecond))
	if s := strings.TrimSpace(r.stdout); s != "" {
		fmt.Fprintf(&b, "\n--- stdout:\n%s", tail(s, 40))
	}
	if s := strings.TrimSpace(r.stderr); s != "" {
		fmt.Fprintf(&b, "\n--- stderr:\n%s", tail(s, 40))
	}
	return b.String()
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("[... %d lines]", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

// cmd describes a command to run: the binary, its args, and optional extra
// environment (KEY=VALUE, appended to ours) and working directory.
type cmd struct {
	bin  string
	args []string
	env  []string
	dir  string
}

func command(bin string, args ...string) cmd { return cmd{bin: bin, args: args} }

func (c cmd) withEnv(kv ...string) cmd {
	c.env = append(append([]string(nil), c.env...), kv...)
	return c
}
func (c cmd) inDir(d string) cmd { c.dir = d; return c }

func (c cmd) line() string {
	parts := []string{filepath.Base(c.bin)}
	for _, a := range c.args {
		if a == "" || strings.ContainsAny(a, " \t'\"") {
			a = "'" + a + "'"
		}
		parts = append(parts, a)
	}
	s := strings.Join(parts, " ")
	if len(c.env) > 0 {
		s = strings.Join(c.env, " ") + " " + s
	}
	return s
}

// run runs c with a bounded time, logs its command line, and returns what it did.
func (c cmd) run(t testing.TB) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	x := exec.CommandContext(ctx, c.bin, c.args...)
	x.Env = append(os.Environ(), c.env...)
	x.Dir = c.dir
	x.WaitDelay = 5 * time.Second
	var so, se bytes.Buffer
	x.Stdout, x.Stderr = &so, &se
	start := time.Now()
	err := x.Run()
	r := result{line: c.line(), stdout: so.String(), stderr: se.String(), err: err, took: time.Since(start)}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("%w (killed after %s)", err, cmdTimeout)
	}
	if err != nil {
		t.Logf("$ %s  # FAILED %v in %s", r.line, r.err, r.took.Round(time.Millisecond))
	} else {
		t.Logf("$ %s  # %s", r.line, r.took.Round(time.Millisecond))
	}
	return r
}

// must runs c and fails the test (now) unless it succeeds; returns stdout.
func (c cmd) must(t testing.TB) string {
	t.Helper()
	r := c.run(t)
	if r.err != nil {
		t.Fatalf("%s", r)
	}
	return r.stdout
}

// should runs c and marks the test failed (continuing) unless it succeeds.
func (c cmd) should(t testing.TB) (string, bool) {
	t.Helper()
	r := c.run(t)
	if r.err != nil {
		t.Errorf("%s", r)
		return r.stdout, false
	}
	return r.stdout, true
}

// proc is a long-running server process, in its own process group, output
// to a log file; stopped on test cleanup.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startProc(t testing.TB, name, logPath string, c cmd) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	x := exec.Command(c.bin, c.args...)
	x.Env = append(os.Environ(), c.env...)
	x.Dir = c.dir
	x.Stdout, x.Stderr = f, f
	x.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Logf("$ %s >%s 2>&1 &", c.line(), logPath)
	if err := x.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: %v", c.line(), err)
	}
	p := &proc{name: name, cmd: x, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = x.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after 5s. Idempotent.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// sha256Digest returns the sha256 digest string of b.
func sha256Digest(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// descriptor is the part of an OCI descriptor the tests look at.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     *platform         `json:"platform,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

// manifestDoc is an image manifest or an index (whichever fields apply).
type manifestDoc struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	ArtifactType  string       `json:"artifactType,omitempty"`
	Config        *descriptor  `json:"config,omitempty"`
	Layers        []descriptor `json:"layers,omitempty"`
	Manifests     []descriptor `json:"manifests,omitempty"`
}

func parseManifest(t testing.TB, what string, b []byte) manifestDoc {
	t.Helper()
	var m manifestDoc
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: not a manifest: %v\n%s", what, err, b)
	}
	return m
}

const refNameKey = "org.opencontainers.image.ref.name"

// layoutIndex reads DIR/index.json of an OCI image layout.
func layoutIndex(t testing.TB, dir string) []descriptor {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatalf("layout %s: %v", dir, err)
	}
	return parseManifest(t, dir+"/index.json", b).Manifests
}

// layoutRef returns the descriptor named ref in DIR/index.json; ref ""
// accepts the only descriptor of an index.json that holds exactly one.
func layoutRef(t testing.TB, dir, ref string) (descriptor, error) {
	t.Helper()
	idx := layoutIndex(t, dir)
	var names []string
	for _, d := range idx {
		n := d.Annotations[refNameKey]
		if n == ref || (ref == "" && len(idx) == 1) {
			return d, nil
		}
		names = append(names, n)
	}
	return descriptor{}, fmt.Errorf("layout %s: no descriptor named %q in index.json (names: %q)", dir, ref, names)
}

// layoutBlob reads a blob of an OCI layout and checks it hashes to its name.
func layoutBlob(t testing.TB, dir, dgst string) ([]byte, error) {
	t.Helper()
	algo, hexd, ok := strings.Cut(dgst, ":")
	if !ok {
		return nil, fmt.Errorf("bad digest %q", dgst)
	}
	b, err := os.ReadFile(filepath.Join(dir, "blobs", algo, hexd))
	if err != nil {
		return nil, err
	}
	if algo == "sha256" && sha256Digest(b) != dgst {
		return nil, fmt.Errorf("layout %s: blob %s hashes to %s", dir, dgst, sha256Digest(b))
	}
	return b, nil
}

// descriptorDigest parses `oras manifest fetch --descriptor` style output.
func descriptorDigest(t testing.TB, what, out string) string {
	t.Helper()
	var d descriptor
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &d); err != nil {
		t.Errorf("%s: output is not a descriptor: %v\n%s", what, err, out)
		return ""
	}
	return d.Digest
}
