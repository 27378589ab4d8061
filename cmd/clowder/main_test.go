package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clowder-dev/clowder/internal/testutil"
)

// TestMain lets the test binary act as the clowder command, so tests can run
// and kill real clowder processes without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("CLOWDER_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func clowderCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "CLOWDER_RUN_MAIN=1", "HOME="+os.TempDir())
	return cmd
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := clowderCmd(ctx, args...).CombinedOutput()
	return string(out), err
}

type proc struct {
	cmd  *exec.Cmd
	addr string
	root string
	log  *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the exec copier and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startServe(t *testing.T, cfg, root string) *proc {
	t.Helper()
	addr := testutil.FreeAddr(t)
	cmd := clowderCmd(context.Background(), "serve", "--config", cfg, "--root", root, "--listen", addr)
	log := &syncBuffer{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr, root: root, log: log}
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("clowder serve did not come up: %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "clowder.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func blobFiles(root string) []string {
	var out []string
	_ = filepath.Walk(filepath.Join(root, "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// SIGKILL during a fill, then restart: no partial blob under blobs/, the
// stale ingest file is gone, other repositories answer at once, and the
// interrupted blob refills and verifies.
func TestKillDuringFillThenRestart(t *testing.T) {
	blob := testutil.NewBlobServer(t, 8<<20)
	blob.Rate = 1 << 20
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, reg.DirectHost, "other/img", "1", 1, 1024)
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: up, url: '%s'}\n  - {name: reg, url: 'http://%s'}\n", blob.URL, reg.Host))
	root := t.TempDir()

	p := startServe(t, cfg, root)
	// Warm one repository before the crash.
	if resp, err := http.Get("http://" + p.addr + "/v2/reg/other/img/manifests/1"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("warm manifest: %v %v", resp, err)
	}
	blobURL := "http://" + p.addr + "/v2/up/m/blobs/" + blob.Digest.String()
	go func() {
		if resp, err := http.Get(blobURL); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	ingest := filepath.Join(root, ".clowder/ingest")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(ingest)
		if len(ents) == 1 {
			if fi, err := ents[0].Info(); err == nil && fi.Size() > 1<<20 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("fill never got going")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.kill()
	if files := blobFiles(root); len(files) != 0 {
		for _, f := range files {
			if strings.HasSuffix(f, blob.Digest.Encoded()) {
				t.Fatalf("partial blob visible after SIGKILL: %s", f)
			}
		}
	}

	reg.SetDown(true) // "every other repo answers at once", from the cache
	start := time.Now()
	p2 := startServe(t, cfg, root)
	resp, err := http.Get("http://" + p2.addr + "/v2/reg/other/img/manifests/1")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("cached manifest after restart: %v %v\n%s", resp, err, p2.log)
	}
	resp.Body.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("restart + cached answer took %v", d)
	}
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Errorf("stale ingest files after restart: %d", len(ents))
	}
	blob.SetRate(0) // the killed process's upstream request may still be served
	resp, err = http.Get("http://" + p2.addr + "/v2/up/m/blobs/" + blob.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, blob.Data) {
		t.Fatalf("refill after restart: %d bytes, %v", len(got), err)
	}
	p2.kill()
	out, err := run(t, "verify", "--config", cfg, "--root", root)
	if err != nil || !strings.Contains(out, "0 bad") {
		t.Errorf("clowder verify = %v\n%s", err, out)
	}
}

func TestVerifyFindsAndRepairsDamage(t *testing.T) {
	blob := testutil.NewBlobServer(t, 4096)
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: up, url: '%s'}\n", blob.URL))
	root := t.TempDir()
	p := startServe(t, cfg, root)
	resp, err := http.Get("http://" + p.addr + "/v2/up/m/blobs/" + blob.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for deadline := time.Now().Add(3 * time.Second); len(blobFiles(root)) == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the commit follows the last byte
	}
	p.kill()
	files := blobFiles(root)
	if len(files) != 1 {
		t.Fatalf("blob files = %v", files)
	}
	os.Chmod(files[0], 0o644)
	if err := os.WriteFile(files[0], []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "verify", "--root", root, "--config", cfg)
	if err == nil || !strings.Contains(out, "BAD") || !strings.Contains(out, "1 bad") {
		t.Errorf("verify on damage = %v\n%s", err, out)
	}
	out, err = run(t, "verify", "--repair", "--root", root, "--config", cfg)
	if err != nil || !strings.Contains(out, "(removed)") {
		t.Errorf("verify --repair = %v\n%s", err, out)
	}
	if len(blobFiles(root)) != 0 {
		t.Error("damaged blob not removed")
	}
}

func TestCLIErrorsAreOneLine(t *testing.T) {
	bad := writeConfig(t, "listen: 127.0.0.1:0\nbogus: 1\n")
	twoDefaults := writeConfig(t, "upstreams:\n  - {name: a, url: 'http://x', default: true}\n  - {name: b, url: 'http://y', default: true}\n")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--config", bad}, `unknown key "bogus"`},
		{[]string{"serve", "--config", twoDefaults}, "upstreams[1] (b).default"},
		{[]string{"serve", "--config", "/nonexistent.yaml"}, "no such file"},
		{[]string{"pull", "--root", t.TempDir(), "NOT A REF"}, "not a valid reference"},
		{[]string{"pull", "--root", t.TempDir(), "--platform", "linux", "alpine"}, "--platform"},
	}
	for _, c := range cases {
		out, err := run(t, c.args...)
		if err == nil {
			t.Errorf("clowder %v succeeded, want an error", c.args)
			continue
		}
		out = strings.TrimSpace(out)
		if strings.Count(out, "\n") != 0 || !strings.HasPrefix(out, "clowder: ") || !strings.Contains(out, c.want) {
			t.Errorf("clowder %v = %q, want one line containing %q", c.args, out, c.want)
		}
	}
	if out, err := run(t, "version"); err != nil || !strings.HasPrefix(out, "clowder ") {
		t.Errorf("clowder version = %q, %v", out, err)
	}
}

func TestPullPreseedsAndEnvConfig(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true})
	testutil.PushIndex(t, reg.DirectHost, "lib/multi", "1")
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: reg, url: 'http://%s', default: true}\n", reg.Host))
	root := t.TempDir()
	cmd := clowderCmd(context.Background(), "pull", "--root", root, "--platform", "linux/arm64", "reg/lib/multi:1")
	cmd.Env = append(cmd.Env, "CLOWDER_CONFIG="+cfg)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "linux/arm64") || strings.Contains(string(out), "linux/amd64") {
		t.Fatalf("clowder pull --platform = %v\n%s", err, out)
	}
	n1 := len(blobFiles(root))
	out2, err := run(t, "pull", "--config", cfg, "--root", root, "lib/multi:1")
	if err != nil || !strings.Contains(out2, "linux/amd64") {
		t.Fatalf("clowder pull (all platforms) = %v\n%s", err, out2)
	}
	if n2 := len(blobFiles(root)); n2 <= n1 {
		t.Errorf("blobs after all-platform pull = %d, after one platform %d", n2, n1)
	}
	idx, _ := os.ReadFile(filepath.Join(root, "index.json"))
	if !strings.Contains(string(idx), `"reg/lib/multi:1"`) {
		t.Errorf("index.json lacks reg/lib/multi:1:\n%s", idx)
	}
	// Served from the pre-seeded root with the upstream gone.
	reg.SetDown(true)
	p := startServe(t, cfg, root)
	resp, err := http.Get("http://" + p.addr + "/v2/reg/lib/multi/manifests/1")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pre-seeded manifest: %v %v", resp, err)
	}
	resp.Body.Close()
}
