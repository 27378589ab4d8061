package server_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"

	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/hosted"
	"github.com/clowder-dev/clowder/internal/testutil"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/server"
)

type authEnv struct {
	*env
	srv    *httptest.Server
	host   string
	ollama ed25519.PrivateKey
}

func newAuthEnv(t *testing.T, anonymous bool, ups ...upSpec) *authEnv {
	// As in production with auth on: names fetched with the proxy's
	// credentials are checked for public access and marked private.
	e := newEnvWith(t, proxy.Options{RevalidateTimeout: 2 * time.Second, UpstreamTimeout: 10 * time.Second, MarkPrivate: true}, ups...)
	hash, _ := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.MinCost)
	bobHash, _ := bcrypt.GenerateFromPassword([]byte("bob-pw"), bcrypt.MinCost)
	users, err := server.ParseHtpasswd([]byte("alice:" + string(hash) + "\nbob:" + string(bobHash) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	spub, _ := ssh.NewPublicKey(pub)
	keyID, err := server.OllamaKeyID(string(ssh.MarshalAuthorizedKey(spub)))
	if err != nil {
		t.Fatal(err)
	}
	a := server.NewAuth(server.AuthConfig{
		Users:      users,
		Tokens:     map[string]string{"ci-token-0123456789": "ci"},
		OllamaKeys: map[string]string{keyID: "alice"},
		Groups:     map[string][]string{"ml": {"alice"}},
		Anonymous:  anonymous,
		Rules: []config.AuthRule{
			{Names: []string{"local/team/*"}, Groups: []string{"ml"}, Actions: []string{"pull", "push", "delete"}},
			{Names: []string{"local/*"}, Users: []string{"*"}, Actions: []string{"pull"}},
			{Names: []string{"up/*", "huggingface.co/*", "corp/*", "pub/*"}, Users: []string{"*", "anonymous"}, Actions: []string{"pull"}},
			{Names: []string{"registry.ollama.ai/*"}, Groups: []string{"ml"}, Actions: []string{"pull"}},
		},
	})
	hs, err := hosted.Open(e.store, e.root, "local")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(e.proxy, zerolog.Nop(), server.Options{Auth: a, Hosted: hs}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &authEnv{env: e, srv: srv, host: u.Host, ollama: priv}
}

func (a *authEnv) req(method, path string, hdr ...string) (*http.Response, []byte) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func TestAuthTokenFlowAndRules(t *testing.T) {
	reg := testutil.NewRegistry(t, testutil.RegistryOptions{})
	img := testutil.PushImage(t, reg.DirectHost, "app", "1", 1, 2048)
	want, _ := img.Digest()
	a := newAuthEnv(t, false, upSpec{name: "up", url: "http://" + reg.Host, ttl: time.Hour})

	// Anonymous: 401 with a Bearer challenge on this host and port, no content.
	resp, b := a.req("GET", "/v2/")
	ch := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != 401 || !strings.Contains(ch, `realm="http://`+a.host+`/token"`) || ociCode(t, b) != "UNAUTHORIZED" {
		t.Fatalf("anonymous /v2/ = %d %q %s", resp.StatusCode, ch, b)
	}
	resp, b = a.req("GET", "/v2/up/app/manifests/1")
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="repository:up/app:pull"`) || strings.Contains(string(b), "schemaVersion") {
		t.Fatalf("anonymous manifest = %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b)
	}
	if reg.Count("GET manifests") != 0 {
		t.Errorf("an unauthenticated request reached the upstream")
	}

	// go-containerregistry's client: the standard token flow with Basic.
	ref, _ := name.ParseReference(a.host+"/up/app:1", name.Insecure)
	got, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"}))
	if err != nil {
		t.Fatalf("pull as alice: %v", err)
	}
	if d, _ := got.Digest(); d != want {
		t.Errorf("pull as alice = %s, want %s", d, want)
	}
	if _, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "alice", Password: "wrong"})); err == nil {
		t.Error("pull with a wrong password succeeded")
	}
	// A static token as Bearer and as a Basic password.
	for _, h := range []string{"Bearer ci-token-0123456789", "Basic " + base64.StdEncoding.EncodeToString([]byte("x:ci-token-0123456789"))} {
		if resp, b := a.req("GET", "/v2/up/app/manifests/1", "Authorization", h); resp.StatusCode != 200 {
			t.Errorf("static token (%s) = %d %s", h[:6], resp.StatusCode, b)
		}
	}
	// Rules: alice (group ml) may push to local/team/*, bob may not (403).
	dst, _ := name.ParseReference(a.host+"/local/team/model:v1", name.Insecure)
	rimg, _ := random.Image(512, 1)
	if err := remote.Write(dst, rimg, remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})); err != nil {
		t.Fatalf("push as alice: %v", err)
	}
	resp, b = a.req("PUT", "/v2/local/team/model/manifests/v2", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("bob:bob-pw")))
	if resp.StatusCode != 403 || ociCode(t, b) != "DENIED" {
		t.Errorf("push as bob = %d %s, want 403 DENIED", resp.StatusCode, b)
	}
	if _, err := remote.Image(dst, remote.WithAuth(&authn.Basic{Username: "bob", Password: "bob-pw"})); err != nil {
		t.Errorf("bob may pull local/*: %v", err)
	}
	// A cross-repo mount from a repository bob may not read is an upload.
	resp, _ = a.req("POST", "/v2/local/bob/x/blobs/uploads/?mount="+want.String()+"&from=local/team/model", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("bob:bob-pw")))
	if resp.StatusCode == 201 {
		t.Errorf("bob mounted from a repository he may not read")
	}
}

// ollama signs its token request with its ed25519 key; ranged parts go to
// the presigned Location without Authorization.
func TestAuthOllamaKeyAndPresignedParts(t *testing.T) {
	o := testutil.NewOllamaRegistry(t)
	m := testutil.NewOllamaModel(300000)
	o.Add("library/m:t", m)
	a := newAuthEnv(t, false, upSpec{name: "registry.ollama.ai", url: o.Server.URL, ollama: true})

	resp, _ := a.req("GET", "/v2/library/m/manifests/t", "User-Agent", ollamaUA)
	if resp.StatusCode != 401 {
		t.Fatalf("unsigned ollama request = %d", resp.StatusCode)
	}
	realm := "http://" + a.host + "/token"
	sign := func(key ed25519.PrivateKey) string {
		q := url.Values{"service": {"clowder"}, "scope": {"repository:library/m:pull"}, "ts": {fmt.Sprint(time.Now().Unix())}, "nonce": {fmt.Sprint(time.Now().UnixNano())}}
		u := realm + "?" + q.Encode()
		sum := sha256.Sum256(nil)
		data := fmt.Sprintf("GET,%s,%s", u, base64.StdEncoding.EncodeToString([]byte(hex.EncodeToString(sum[:]))))
		spub, _ := ssh.NewPublicKey(key.Public())
		wire := base64.StdEncoding.EncodeToString(spub.Marshal())
		return u + "\n" + wire + ":" + base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(data)))
	}
	tokenFor := func(key ed25519.PrivateKey) (int, string) {
		u, h, _ := strings.Cut(sign(key), "\n")
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", h)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tr struct{ Token string }
		json.NewDecoder(resp.Body).Decode(&tr)
		return resp.StatusCode, tr.Token
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	if code, _ := tokenFor(stranger); code != 401 {
		t.Errorf("token for an unknown key = %d, want 401", code)
	}
	code, tok := tokenFor(a.ollama)
	if code != 200 || tok == "" {
		t.Fatalf("token for alice's key = %d", code)
	}
	auth := "Bearer " + tok
	if resp, _ := a.req("GET", "/v2/library/m/manifests/t", "User-Agent", ollamaUA, "Authorization", auth); resp.StatusCode != 200 {
		t.Fatalf("manifest with the token = %d", resp.StatusCode)
	}
	path := "/v2/library/m/blobs/" + m.Model.String()
	resp, _ = a.req("GET", path, "User-Agent", ollamaUA, "Authorization", auth)
	loc, err := resp.Location()
	if resp.StatusCode != 200 || err != nil || !strings.Contains(loc.RawQuery, "clowder-sig=") {
		t.Fatalf("probe GET = %d Location %v", resp.StatusCode, loc)
	}
	data := m.Blobs[m.Model]
	resp, b := a.req("GET", loc.RequestURI(), "Range", "bytes=100-199")
	if resp.StatusCode != 206 || string(b) != string(data[100:200]) {
		t.Errorf("presigned ranged part = %d (%d bytes)", resp.StatusCode, len(b))
	}
	// The presigned URL is bound to its path.
	other := strings.Replace(loc.RequestURI(), m.Model.Encoded(), strings.Repeat("0", 64), 1)
	if resp, _ := a.req("GET", other, "Range", "bytes=0-1"); resp.StatusCode != 401 {
		t.Errorf("presigned query on another path = %d, want 401", resp.StatusCode)
	}
}

// A gated Hugging Face file cached for one token is refused to a client
// without one (and to a token the hub refuses).
func TestGatedFileNotServedToAnonymous(t *testing.T) {
	f := newHubFixture(t)
	e := hfEnv(t, f) // client authentication off
	path := "/org/gated/resolve/main/w.bin"
	resp := e.do("GET", path, "Authorization", "Bearer "+f.hub.Token)
	if b := body(t, resp); resp.StatusCode != 200 || len(b) != 1000 {
		t.Fatalf("gated file with the token = %d", resp.StatusCode)
	}
	for _, h := range []string{"", "Bearer hf_someoneelse"} {
		hdr := []string{}
		if h != "" {
			hdr = []string{"Authorization", h}
		}
		resp = e.do("GET", path, hdr...)
		b := body(t, resp)
		if resp.StatusCode != 401 || resp.Header.Get("X-Error-Code") != "GatedRepo" || len(b) > 500 {
			t.Errorf("cached gated file with %q = %d %q (%d bytes)", h, resp.StatusCode, resp.Header.Get("X-Error-Code"), len(b))
		}
	}
	// The OCI view of a gated repo is not served without Clowder auth.
	resp = e.do("GET", "/v2/huggingface.co/org/gated/manifests/main")
	if b := body(t, resp); resp.StatusCode != 403 {
		t.Errorf("OCI view of a gated repo = %d %s, want 403", resp.StatusCode, b)
	}
	// The token still works (checked upstream, cached).
	resp = e.do("GET", path, "Authorization", "Bearer "+f.hub.Token)
	if body(t, resp); resp.StatusCode != 200 {
		t.Errorf("gated file with the token, warm = %d", resp.StatusCode)
	}
}

// Content fetched with the proxy's own upstream credentials that the
// upstream does not give anonymously is private: only authenticated
// clients the rules let in get it, and its digests are not handed out
// through another repository's route that does not have them.
func TestPrivateUpstreamContent(t *testing.T) {
	priv := testutil.NewRegistry(t, testutil.RegistryOptions{Auth: true, Username: "proxy", Password: "proxy-pw"})
	img := testutil.PushImage(t, priv.DirectHost, "secret/img", "1", 1, 2048)
	layers, _ := img.Layers()
	layer, _ := layers[0].Digest()
	pub := testutil.NewRegistry(t, testutil.RegistryOptions{})
	testutil.PushImage(t, pub.DirectHost, "open/img", "1", 1, 512)
	a := newAuthEnv(t, true, // anonymous clients allowed to pull corp/* and pub/* by the rules
		upSpec{name: "corp", url: "http://" + priv.Host, user: "proxy", pass: "proxy-pw", ttl: time.Hour},
		upSpec{name: "pub", url: "http://" + pub.Host, ttl: time.Hour})
	aliceAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:alice-pw"))

	// alice fetches it (through the proxy's credentials): marked private.
	resp, b := a.req("GET", "/v2/corp/secret/img/manifests/1", "Authorization", aliceAuth)
	if resp.StatusCode != 200 {
		t.Fatalf("alice: manifest = %d %s", resp.StatusCode, b)
	}
	if d := a.names()["corp/secret/img:1"]; d.Annotations["dev.clowder.private"] != "true" {
		t.Fatalf("corp/secret/img:1 not marked private: %v", d.Annotations)
	}
	if resp, _ := a.req("GET", "/v2/corp/secret/img/blobs/"+layer.String(), "Authorization", aliceAuth); resp.StatusCode != 200 {
		t.Fatalf("alice: layer = %d", resp.StatusCode)
	}
	// Anonymous clients may pull corp/* by the rules, but not private content.
	for _, p := range []string{"/v2/corp/secret/img/manifests/1", "/v2/corp/secret/img/blobs/" + layer.String()} {
		resp, b := a.req("GET", p)
		if resp.StatusCode != 401 || len(b) > 1000 || strings.Contains(string(b), "schemaVersion") {
			t.Errorf("anonymous GET %s = %d (%d bytes), want 401 and no content", p, resp.StatusCode, len(b))
		}
	}
	// The private layer's digest through a public repository that lacks it.
	resp, b = a.req("GET", "/v2/pub/open/img/blobs/"+layer.String())
	if resp.StatusCode != 404 || ociCode(t, b) != "BLOB_UNKNOWN" {
		t.Errorf("private layer via pub/open/img = %d %s, want 404 BLOB_UNKNOWN", resp.StatusCode, b)
	}
	// Public content is not marked.
	if resp, _ := a.req("GET", "/v2/pub/open/img/manifests/1"); resp.StatusCode != 200 {
		t.Errorf("anonymous public manifest = %d", resp.StatusCode)
	}
	if d := a.names()["pub/open/img:1"]; d.Annotations["dev.clowder.private"] != "" {
		t.Errorf("public content marked private")
	}
}
