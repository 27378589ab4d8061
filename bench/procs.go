package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process in its own process group, so that stopping it
// also stops what it forked (nginx workers).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

var (
	procsMu sync.Mutex
	procs   = map[*proc]bool{}
)

func startProc(name, logPath string, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	procsMu.Lock()
	procs[p] = true
	procsMu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after 5 s.
func (p *proc) stop() {
	if p == nil {
		return
	}
	procsMu.Lock()
	delete(procs, p)
	procsMu.Unlock()
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Workers of a group whose leader exited first.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func killAll() {
	procsMu.Lock()
	var ps []*proc
	for p := range procs {
		ps = append(ps, p)
	}
	procsMu.Unlock()
	for _, p := range ps {
		p.stop()
	}
}

// tail returns the last lines of the process log, for error messages.
func (p *proc) tail() string {
	data, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// hwm returns the process's peak resident set (VmHWM) in bytes.
func (p *proc) hwm() int64 { return procStatus(p.pid(), "VmHWM") }

func procStatus(pid int, key string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return -1
}

// freePort returns a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startServer starts a server process (its log under logs/logName) and
// waits until readyURL answers; a server that never does is stopped.
func (b *bench) startServer(ctx context.Context, name, logName, readyURL, bin string, args ...string) (*proc, error) {
	p, err := startProc(name, filepath.Join(b.tmp, "logs", logName), bin, args...)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, p, readyURL); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// waitHTTP polls url until it answers (any status) or the process exits.
func waitHTTP(ctx context.Context, p *proc, url string) error {
	deadline := time.Now().Add(20 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p.exited() {
			return fmt.Errorf("%s exited at start:\n%s", p.name, p.tail())
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %s within 20s:\n%s", p.name, url, p.tail())
}

// --- Clowder ---

func (b *bench) startClowder(ctx context.Context, bin, tag, root string) (*proc, string, error) {
	return b.startClowderWith(ctx, bin, tag, root, "")
}

// startClowderWith starts a clowder whose config is the bench's upstream
// plus extra (top-level YAML: storage, local_cache_size).
func (b *bench) startClowderWith(ctx context.Context, bin, tag, root, extra string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(b.tmp, "clowder-"+tag+".yaml")
	text := fmt.Sprintf("upstreams:\n  - name: up\n    type: oci\n    url: %s\n    tag_ttl: 1h\n%s", b.up.url, extra)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	base := "http://" + addr
	p, err := b.startServer(ctx, "clowder", "clowder-"+tag+".log", base+"/healthz", bin, "serve", "--config", cfg, "--root", root, "--listen", addr)
	if err != nil {
		return nil, "", err
	}
	return p, base, nil
}

// --- CNCF distribution ---

func (b *bench) startDistribution(ctx context.Context, tag, root, remote string) (*proc, string, error) {
	if _, err := os.Stat(b.o.registryBin); err != nil {
		return nil, "", fmt.Errorf("distribution registry binary: %v (run `make tools` or set REGISTRY)", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: %s
  secret: clowder-bench-not-secret
`, root, addr)
	if remote != "" {
		cfg += "proxy:\n  remoteurl: " + remote + "\n"
	}
	cfgPath := filepath.Join(b.tmp, "distribution-"+tag+".yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, "", err
	}
	base := "http://" + addr
	p, err := b.startServer(ctx, "distribution", "distribution-"+tag+".log", base+"/v2/", b.o.registryBin, "serve", cfgPath)
	if err != nil {
		return nil, "", err
	}
	return p, base, nil
}

// --- nginx ---

func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// ensureNginx installs nginx with apt-get when it is missing (Debian's
// policy-rc.d keeps the package from starting a system nginx).
func ensureNginx(ctx context.Context) (string, error) {
	if p := findNginx(); p != "" {
		return p, nil
	}
	logf("nginx missing: apt-get install -y nginx")
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "nginx")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install nginx: %v\n%s", err, lastLines(string(out), 10))
		}
		return nil
	}
	if err := install(); err != nil {
		logf("retrying after apt-get update")
		upd := exec.CommandContext(ctx, "apt-get", "update", "-q")
		if out, err := upd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get update: %v\n%s", err, lastLines(string(out), 10))
		}
		if err := install(); err != nil {
			return "", err
		}
	}
	if p := findNginx(); p != "" {
		return p, nil
	}
	return "", errors.New("nginx installed but not found")
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// startNginx runs one nginx (master + 2 workers) with two servers on the
// same docroot: sendfile off with output_buffers 4 1m, and sendfile on.
func (b *bench) startNginx(ctx context.Context, docroot string) (*proc, string, string, error) {
	bin, err := ensureNginx(ctx)
	if err != nil {
		return nil, "", "", err
	}
	pOff, err := freePort()
	if err != nil {
		return nil, "", "", err
	}
	pOn, err := freePort()
	if err != nil {
		return nil, "", "", err
	}
	dir := filepath.Join(b.tmp, "nginx")
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(dir, "tmp", d), 0o755); err != nil {
			return nil, "", "", err
		}
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes auto;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  default_type application/octet-stream;
  types {}
  keepalive_requests 1000000;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  root %[2]s;
  server {
    listen 127.0.0.1:%[3]d;
    sendfile off;
    output_buffers 4 1m;
  }
  server {
    listen 127.0.0.1:%[4]d;
    sendfile on;
    tcp_nopush on;
  }
}
`, dir, docroot, pOff, pOn)
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return nil, "", "", err
	}
	p, err := startProc("nginx", filepath.Join(b.tmp, "logs", "nginx.log"), bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", cfg)
	if err != nil {
		return nil, "", "", err
	}
	off := fmt.Sprintf("http://127.0.0.1:%d", pOff)
	on := fmt.Sprintf("http://127.0.0.1:%d", pOn)
	for _, u := range []string{off, on} {
		if err := waitHTTP(ctx, p, u+"/"); err != nil {
			p.stop()
			return nil, "", "", fmt.Errorf("%v\n%s", err, readTail(filepath.Join(dir, "error.log")))
		}
	}
	return p, off, on, nil
}

func readTail(path string) string {
	data, _ := os.ReadFile(path)
	return lastLines(string(data), 8)
}

// --- Go file servers (this binary, re-executed) ---

func (b *bench) startGoFile(ctx context.Context, mode, file string) (*proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	base := "http://" + addr
	p, err := b.startServer(ctx, "go-"+mode, "gofile-"+mode+".log", base+"/healthz", self, "serve-file", "-listen", addr, "-mode", mode, "-file", file)
	if err != nil {
		return nil, "", err
	}
	return p, base, nil
}
