// Package testutil runs real registries on loopback for tests:
// go-containerregistry's registry behind a token server of our own, with
// counters and fault switches.
package testutil

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is a real OCI registry (go-containerregistry's) on loopback,
// optionally behind Bearer token auth whose realm is a second listener on
// another port.
type Registry struct {
	Server *httptest.Server
	Token  *httptest.Server // nil without auth
	// Host is host:port of the registry.
	Host string
	// Direct serves the same content with no auth, counting or faults: tests
	// push through it.
	Direct *httptest.Server
	// DirectHost is host:port of Direct.
	DirectHost string

	mu       sync.Mutex
	counts   map[string]int // "GET manifests", "HEAD blobs", ...
	log      []string
	down     atomic.Bool
	status   atomic.Int32 // when non-zero, every /v2/ request gets it
	retry    string
	user     string
	pass     string
	tokens   map[string]string // token -> scope
	tokenReq atomic.Int32
	hook     func(w http.ResponseWriter, r *http.Request) bool
	tokenErr atomic.Int32 // when non-zero, the token server answers it
}

// SetTokenStatus makes the token server fail with status (0: work again).
func (r *Registry) SetTokenStatus(status int) { r.tokenErr.Store(int32(status)) }

// RegistryOptions configure NewRegistry.
type RegistryOptions struct {
	// Auth puts the registry behind a Bearer token server.
	Auth bool
	// Username and Password, when set, are required by the token server.
	Username, Password string
	// RealmHost overrides the host in the realm URL (e.g. a private IP
	// literal that still reaches loopback is not possible, so tests use
	// 127.0.0.1 on another port, as crane would refuse).
	RealmHost string
}

// NewRegistry starts a registry; it stops with the test.
func NewRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	r := &Registry{counts: map[string]int{}, tokens: map[string]string{}, user: opts.Username, pass: opts.Password}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	if opts.Auth {
		r.Token = httptest.NewServer(http.HandlerFunc(r.serveToken))
		t.Cleanup(r.Token.Close)
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.record(req)
		if r.down.Load() {
			// Simulate a dead upstream: drop the connection.
			hj, ok := w.(http.Hijacker)
			if ok {
				c, _, err := hj.Hijack()
				if err == nil {
					c.Close()
					return
				}
			}
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if s := r.status.Load(); s != 0 && strings.HasPrefix(req.URL.Path, "/v2/") {
			if r.retry != "" {
				w.Header().Set("Retry-After", r.retry)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(int(s))
			fmt.Fprintf(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"injected %d"}]}`, s)
			return
		}
		if r.hook != nil && r.hook(w, req) {
			return
		}
		if opts.Auth && !r.authorized(req) {
			scope := ""
			if name, _, ok := splitV2(req.URL.Path); ok {
				act := "pull"
				if req.Method != http.MethodGet && req.Method != http.MethodHead {
					act = "pull,push"
				}
				scope = fmt.Sprintf("repository:%s:%s", name, act)
			}
			realm := r.Token.URL + "/token"
			if opts.RealmHost != "" {
				u, _ := url.Parse(r.Token.URL)
				_, port, _ := net.SplitHostPort(u.Host)
				realm = "http://" + net.JoinHostPort(opts.RealmHost, port) + "/token"
			}
			ch := fmt.Sprintf(`Bearer realm="%s",service="test-registry"`, realm)
			if scope != "" {
				ch += fmt.Sprintf(`,scope="%s"`, scope)
			}
			w.Header().Set("WWW-Authenticate", ch)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Server.Close)
	u, _ := url.Parse(r.Server.URL)
	r.Host = u.Host
	r.Direct = httptest.NewServer(inner)
	t.Cleanup(r.Direct.Close)
	u, _ = url.Parse(r.Direct.URL)
	r.DirectHost = u.Host
	return r
}

// splitV2 returns the repository name and kind of a /v2/ path.
func splitV2(p string) (name, kind string, ok bool) {
	rest, found := strings.CutPrefix(p, "/v2/")
	if !found {
		return "", "", false
	}
	segs := strings.Split(rest, "/")
	for i := len(segs) - 1; i >= 1; i-- {
		switch segs[i] {
		case "manifests", "blobs", "tags", "referrers":
			return strings.Join(segs[:i], "/"), segs[i], true
		}
	}
	return "", "", false
}

func (r *Registry) record(req *http.Request) {
	_, kind, ok := splitV2(req.URL.Path)
	if !ok {
		kind = strings.TrimPrefix(req.URL.Path, "/")
	}
	if strings.Contains(req.URL.Path, "/blobs/uploads") {
		kind = "uploads"
	}
	r.mu.Lock()
	r.counts[req.Method+" "+kind]++
	r.log = append(r.log, req.Method+" "+req.URL.RequestURI())
	r.mu.Unlock()
}

// Count returns how many requests of "METHOD kind" (kind: manifests,
// blobs, tags, referrers) the registry saw.
func (r *Registry) Count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[key]
}

// Log returns the requests seen so far.
func (r *Registry) Log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// ResetCounts forgets the counters.
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	r.counts = map[string]int{}
	r.log = nil
	r.mu.Unlock()
}

// TokenRequests returns how many tokens were requested.
func (r *Registry) TokenRequests() int { return int(r.tokenReq.Load()) }

// SetDown makes every request fail at the connection level.
func (r *Registry) SetDown(down bool) { r.down.Store(down) }

// SetStatus makes every /v2/ request answer status (0 turns it off), with
// Retry-After when retryAfter is set.
func (r *Registry) SetStatus(status int, retryAfter string) {
	r.retry = retryAfter
	r.status.Store(int32(status))
}

// SetHook installs a handler that runs before the registry; it returns true
// when it answered.
func (r *Registry) SetHook(h func(w http.ResponseWriter, r *http.Request) bool) { r.hook = h }

func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	r.tokenReq.Add(1)
	if s := r.tokenErr.Load(); s != 0 {
		w.WriteHeader(int(s))
		return
	}
	if r.user != "" {
		u, p, ok := req.BasicAuth()
		if !ok || u != r.user || p != r.pass {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	scope := strings.Join(req.URL.Query()["scope"], " ")
	var b [12]byte
	for i := range b {
		b[i] = byte(time.Now().UnixNano() >> (i % 8))
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:]) + fmt.Sprint(r.tokenReq.Load())
	r.mu.Lock()
	r.tokens[tok] = scope
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300})
}

// authorized accepts a Bearer token issued for exactly this repository's
// scope (push scopes cover pull).
func (r *Registry) authorized(req *http.Request) bool {
	a := req.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(a, "Bearer ")
	if !ok {
		return false
	}
	r.mu.Lock()
	scope, ok := r.tokens[tok]
	r.mu.Unlock()
	if !ok {
		return false
	}
	name, _, ok := splitV2(req.URL.Path)
	if !ok {
		return true // /v2/ ping
	}
	for _, s := range strings.Fields(scope) {
		parts := strings.Split(s, ":")
		if len(parts) == 3 && parts[0] == "repository" && parts[1] == name {
			if req.Method == http.MethodGet || req.Method == http.MethodHead || strings.Contains(parts[2], "push") {
				return true
			}
		}
	}
	return false
}
