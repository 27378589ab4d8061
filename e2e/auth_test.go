package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// selfSigned writes a certificate for 127.0.0.1 (its own CA) and its key.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clowder-e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certPath, keyPath
}

// Real clients log in the standard way (crane auth login, oras login,
// ctr --user) to a Clowder with htpasswd auth and access rules behind TLS;
// an unauthorised client gets 401/403 with the spec's codes and no content.
func TestClientAuthWithRealClients(t *testing.T) {
	tl := needTools(t)
	reg := startRegistry(t, tl)
	c := pushContent(t, tl, reg.addr)
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	alice, _ := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.MinCost)
	bob, _ := bcrypt.GenerateFromPassword([]byte("bob-pw"), bcrypt.MinCost)
	htpasswd := filepath.Join(dir, "htpasswd")
	os.WriteFile(htpasswd, []byte(fmt.Sprintf("alice:%s\nbob:%s\n", alice, bob)), 0o600)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "clowder.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %s
root: %s
tls_cert: %s
tls_key: %s
auth:
  htpasswd: %s
  groups: {ml: [alice]}
  rules:
    - {names: ["up/*", "docker.io/*"], groups: [ml], actions: [pull]}
    - {names: ["local/team/*"], groups: [ml], actions: [pull, push, delete]}
upstreams:
  - {name: up, type: oci, url: 'http://%s', tag_ttl: 1m}
  - {name: docker.io, type: oci, url: 'http://%s', default: true}
`, addr, filepath.Join(dir, "cache"), cert, key, htpasswd, reg.addr, reg.addr)), 0o644)
	logPath := filepath.Join(dir, "clowder.log")
	p := startProc(t, "clowder", logPath, command(tl.clowder, "serve", "--config", cfg))
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for deadline := time.Now().Add(procStartTimeout); ; {
		resp, err := hc.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("clowder (TLS, auth) did not start: %v\n%s", err, tail(p.log(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every Go client here trusts the test CA through SSL_CERT_FILE.
	env := []string{"SSL_CERT_FILE=" + cert, "HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, "docker")}
	ref := addr + "/up/" + refBase

	// No credentials: 401 UNAUTHORIZED with a challenge, no byte of content.
	resp, err := hc.Get("https://" + addr + "/v2/up/" + strings.Replace(refBase, ":", "/manifests/", 1))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, _ := resp.Body.Read(b)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(b[:n]), "UNAUTHORIZED") || strings.Contains(string(b[:n]), "schemaVersion") ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `realm="https://`+addr+`/token"`) {
		t.Fatalf("anonymous manifest = %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b[:n])
	}
	if r := command(tl.crane, "digest", ref).withEnv(env...).run(t); r.err == nil || !strings.Contains(r.stderr, "UNAUTHORIZED") {
		t.Fatalf("crane digest without login = %v, want UNAUTHORIZED:\n%s", r.err, r)
	}

	// crane auth login, then pulls with the stored credentials.
	command(tl.crane, "auth", "login", addr, "-u", "alice", "-p", "alice-pw").withEnv(env...).must(t)
	if got := strings.TrimSpace(command(tl.crane, "digest", ref).withEnv(env...).must(t)); got != c.digest[refBase] {
		t.Errorf("crane digest after login = %s, want %s", got, c.digest[refBase])
	}
	// oras login, then oras pull of the artifact.
	command(tl.oras, "login", addr, "-u", "alice", "-p", "alice-pw").withEnv(env...).must(t)
	out := t.TempDir()
	command(tl.oras, "pull", "-o", out, addr+"/up/"+refArt).withEnv(env...).must(t)
	if got, _ := os.ReadFile(filepath.Join(out, artifactTitle)); string(got) != string(c.artifact) {
		t.Errorf("oras pull after login: artifact = %q", got)
	}
	// oras push to the hosted prefix, as alice (ml may push local/team/*).
	os.WriteFile(filepath.Join(out, "model.gguf"), []byte("GGUF fine-tuned"), 0o644)
	command(tl.oras, "push", addr+"/local/team/model:v1", "model.gguf:application/octet-stream").inDir(out).withEnv(env...).must(t)

	// bob is authenticated but no rule lets him in: 403 DENIED.
	bobEnv := []string{"SSL_CERT_FILE=" + cert, "HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, "docker-bob")}
	command(tl.crane, "auth", "login", addr, "-u", "bob", "-p", "bob-pw").withEnv(bobEnv...).must(t)
	r := command(tl.crane, "digest", ref).withEnv(bobEnv...).run(t)
	if r.err == nil || !strings.Contains(r.stderr+r.stdout, "DENIED") {
		t.Errorf("crane digest as bob = %v, want DENIED:\n%s%s", r.err, r.stdout, r.stderr)
	}
	// A wrong password: 401.
	req, _ := http.NewRequest("GET", "https://"+addr+"/v2/", nil)
	req.SetBasicAuth("alice", "nope")
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("wrong password = %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}

	// containerd through a hosts.toml mirror with credentials (ctr --user).
	sock := startContainerd(t, tl)
	hosts := filepath.Join(dir, "certs.d", "docker.io")
	os.MkdirAll(hosts, 0o755)
	os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(fmt.Sprintf("server = \"https://registry-1.docker.io\"\n[host.\"https://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"%s\"\n", addr, cert)), 0o644)
	img := "docker.io/" + refHello1
	command(tl.ctr, "--address", sock, "content", "fetch", "--hosts-dir", filepath.Join(dir, "certs.d"), "--user", "alice:alice-pw", img).withEnv(env...).must(t)
}

// startContainerd runs a private containerd (hack/containerd-sandbox.sh) for
// this test and returns its socket.
func startContainerd(t *testing.T, tl *tools) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the private containerd needs root")
	}
	dir, err := os.MkdirTemp("", "clowder-ctd-") // short: the socket path must fit in 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sandbox := func(args ...string) cmd {
		return command(filepath.Join(tl.hack, "containerd-sandbox.sh"), args...).withEnv("CONTAINERD="+tl.containerd, "CTR="+tl.ctr)
	}
	sandbox("start", dir).must(t)
	t.Cleanup(func() { sandbox("stop", dir).run(t) })
	return filepath.Join(dir, "containerd.sock")
}
