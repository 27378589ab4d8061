package server

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"

	"github.com/clowder-dev/clowder/config"
)

// AuthConfig is client authentication, read by cmd from the config and the
// htpasswd file.
type AuthConfig struct {
	// Users maps user -> bcrypt hash (htpasswd -B).
	Users map[string]string
	// Tokens maps a static bearer token -> user.
	Tokens map[string]string
	// OllamaKeys maps an ollama public key (the base64 part of
	// "ssh-ed25519 AAAA...") -> user.
	OllamaKeys map[string]string
	// Groups maps group -> users.
	Groups    map[string][]string
	Rules     []config.AuthRule
	Anonymous bool
	// Secret signs issued tokens and presigned blob URLs.
	Secret []byte
	TTL    time.Duration
}

// Auth authenticates clients and applies the access rules.
type Auth struct {
	cfg      AuthConfig
	memberOf map[string][]string
	mu       sync.Mutex
	nonces   map[string]time.Time // ollama token-request nonces seen recently
}

// NewAuth returns the authenticator, or nil when cfg configures no
// credentials (authentication off).
func NewAuth(cfg AuthConfig) *Auth {
	if len(cfg.Users) == 0 && len(cfg.Tokens) == 0 && len(cfg.OllamaKeys) == 0 {
		return nil
	}
	if len(cfg.Secret) == 0 {
		cfg.Secret = make([]byte, 32)
		_, _ = rand.Read(cfg.Secret)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 15 * time.Minute
	}
	a := &Auth{cfg: cfg, memberOf: map[string][]string{}, nonces: map[string]time.Time{}}
	for g, users := range cfg.Groups {
		for _, u := range users {
			a.memberOf[u] = append(a.memberOf[u], g)
		}
	}
	return a
}

// ParseHtpasswd reads htpasswd lines (user:bcrypt-hash); other hash kinds
// are refused.
func ParseHtpasswd(b []byte) (map[string]string, error) {
	users := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, h, ok := strings.Cut(line, ":")
		if !ok || u == "" || !strings.HasPrefix(h, "$2") {
			return nil, fmt.Errorf("htpasswd line %d: want user:bcrypt-hash (htpasswd -B)", i+1)
		}
		users[u] = h
	}
	return users, nil
}

// Identity is who a request is.
type Identity struct {
	User      string
	Anonymous bool
	// HFToken is a Hugging Face token the client sent (Bearer hf_...): an
	// upstream credential, not a Clowder one.
	HFToken string
}

var errBadCredentials = errors.New("invalid credentials")

// identify authenticates r. Presented but wrong credentials are an error;
// none at all is the anonymous identity.
func (a *Auth) identify(r *http.Request) (Identity, error) {
	if u, ok := a.presigned(r); ok {
		return Identity{User: u}, nil
	}
	h := r.Header.Get("Authorization")
	switch {
	case h == "":
		return Identity{User: "anonymous", Anonymous: true}, nil
	case strings.HasPrefix(h, "Basic "):
		user, pass, ok := r.BasicAuth()
		if !ok {
			return Identity{}, errBadCredentials
		}
		if u, ok := a.checkPassword(user, pass); ok {
			return Identity{User: u}, nil
		}
		return Identity{}, errBadCredentials
	case strings.HasPrefix(h, "Bearer "):
		tok := strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
		if u, ok := a.cfg.Tokens[tok]; ok && tok != "" {
			return Identity{User: u}, nil
		}
		if u, ok := a.verifyIssued(tok); ok {
			return Identity{User: u}, nil
		}
		if strings.HasPrefix(tok, "hf_") {
			return Identity{User: "anonymous", Anonymous: true, HFToken: tok}, nil
		}
		return Identity{}, errBadCredentials
	}
	return Identity{}, errBadCredentials
}

// checkPassword accepts an htpasswd user's password, or a static token as
// the password of any user name (docker login -p TOKEN).
func (a *Auth) checkPassword(user, pass string) (string, bool) {
	if h, ok := a.cfg.Users[user]; ok && bcrypt.CompareHashAndPassword([]byte(h), []byte(pass)) == nil {
		return user, true
	}
	if u, ok := a.cfg.Tokens[pass]; ok && pass != "" {
		return u, true
	}
	return "", false
}

// allowed applies the rules: the first rule whose names and principals
// match decides. Without rules, authenticated users may do everything and
// the anonymous one (when allowed in) may pull.
func (a *Auth) allowed(id Identity, action, name string) bool {
	if id.Anonymous && !a.cfg.Anonymous {
		return false
	}
	if len(a.cfg.Rules) == 0 {
		return !id.Anonymous || action == "pull"
	}
	for _, rule := range a.cfg.Rules {
		if !matchAny(rule.Names, name) || !a.principal(rule, id) {
			continue
		}
		return slices.Contains(rule.Actions, action)
	}
	return false
}

func (a *Auth) principal(rule config.AuthRule, id Identity) bool {
	for _, u := range rule.Users {
		if u == id.User || (u == "*" && !id.Anonymous) {
			return true
		}
	}
	for _, g := range rule.Groups {
		if slices.Contains(a.memberOf[id.User], g) {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if p == "*" || p == name || (strings.HasSuffix(p, "*") && strings.HasPrefix(name, strings.TrimSuffix(p, "*"))) {
			return true
		}
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// --- issued tokens and presigned URLs (HMAC-SHA256 with the secret) ---

type tokenClaims struct {
	User string `json:"u"`
	Exp  int64  `json:"exp"`
}

func (a *Auth) mac(b []byte) []byte {
	m := hmac.New(sha256.New, a.cfg.Secret)
	m.Write(b)
	return m.Sum(nil)
}

func (a *Auth) issue(user string) (string, time.Duration) {
	c, _ := json.Marshal(tokenClaims{User: user, Exp: time.Now().Add(a.cfg.TTL).Unix()})
	p := base64.RawURLEncoding.EncodeToString(c)
	return "clw." + p + "." + base64.RawURLEncoding.EncodeToString(a.mac([]byte(p))), a.cfg.TTL
}

func (a *Auth) verifyIssued(tok string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, "clw.")
	if !ok {
		return "", false
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	want := base64.RawURLEncoding.EncodeToString(a.mac([]byte(p)))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	var c tokenClaims
	if err != nil || json.Unmarshal(b, &c) != nil || time.Now().Unix() > c.Exp || c.User == "" {
		return "", false
	}
	return c.User, true
}

// presign returns a query that authorizes GETs of path for user for the
// token lifetime: ollama sends its ranged blob parts to the Location of the
// probe GET without Authorization, as to an object store.
func (a *Auth) presign(p, user string) string {
	exp := strconv.FormatInt(time.Now().Add(a.cfg.TTL).Unix(), 10)
	sig := base64.RawURLEncoding.EncodeToString(a.mac([]byte(p + "\n" + user + "\n" + exp)))
	return "clowder-user=" + urlQueryEscape(user) + "&clowder-exp=" + exp + "&clowder-sig=" + sig
}

func (a *Auth) presigned(r *http.Request) (string, bool) {
	q := r.URL.Query()
	sig := q.Get("clowder-sig")
	if sig == "" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return "", false
	}
	user, exp := q.Get("clowder-user"), q.Get("clowder-exp")
	want := base64.RawURLEncoding.EncodeToString(a.mac([]byte(r.URL.Path + "\n" + user + "\n" + exp)))
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || time.Now().Unix() > e || !hmac.Equal([]byte(sig), []byte(want)) {
		return "", false
	}
	return user, true
}

// --- ollama: a token request signed with the client's ed25519 key ---

// ollamaIdentify checks "Authorization: <base64 ssh public key>:<base64
// signature>" over "GET,<the request URL>,<base64(hex(sha256("")))>", as
// ollama's client signs its token request, with a fresh ts and nonce.
func (a *Auth) ollamaIdentify(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" || strings.HasPrefix(h, "Basic ") || strings.HasPrefix(h, "Bearer ") {
		return "", false
	}
	pubB64, sigB64, ok := strings.Cut(h, ":")
	if !ok {
		return "", false
	}
	user, ok := a.cfg.OllamaKeys[pubB64]
	if !ok {
		return "", false
	}
	wire, err := base64.StdEncoding.DecodeString(pubB64)
	if err != nil {
		return "", false
	}
	pk, err := ssh.ParsePublicKey(wire)
	if err != nil {
		return "", false
	}
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return "", false
	}
	edpk, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return "", false
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return "", false
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || absDur(time.Since(time.Unix(ts, 0))) > 5*time.Minute {
		return "", false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	sum := sha256.Sum256(nil)
	data := fmt.Sprintf("%s,%s://%s%s,%s", http.MethodGet, scheme, r.Host, r.URL.RequestURI(), base64.StdEncoding.EncodeToString([]byte(hex.EncodeToString(sum[:]))))
	if !ed25519.Verify(edpk, []byte(data), sig) {
		return "", false
	}
	nonce := q.Get("nonce")
	a.mu.Lock()
	defer a.mu.Unlock()
	for n, t := range a.nonces {
		if time.Since(t) > 10*time.Minute {
			delete(a.nonces, n)
		}
	}
	if nonce == "" || !a.nonces[nonce].IsZero() {
		return "", false // replayed
	}
	a.nonces[nonce] = time.Now()
	return user, true
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// OllamaKeyID returns the map key for an ollama public key line
// ("ssh-ed25519 AAAA... comment").
func OllamaKeyID(line string) (string, error) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "ssh-ed25519" {
		return "", errors.New("want an ssh-ed25519 public key line")
	}
	if _, err := base64.StdEncoding.DecodeString(f[1]); err != nil {
		return "", err
	}
	return f[1], nil
}

// --- HTTP ---

// handleToken is the registry token endpoint (GET /token?service=&scope=):
// Basic credentials (htpasswd or a static token), an ollama signature, or
// none (when anonymous pulls are allowed) get a token.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	a := s.opts.Auth
	if a == nil {
		writeError(w, r, errorf(http.StatusNotFound, CodeUnsupported, "authentication is not enabled"))
		return
	}
	user := ""
	if u, ok := a.ollamaIdentify(r); ok {
		user = u
	} else {
		id, err := a.identify(r)
		switch {
		case err != nil:
			s.challenge(w, r, "", errorf(http.StatusUnauthorized, CodeUnauthorized, "invalid credentials"))
			return
		case id.Anonymous && !a.cfg.Anonymous:
			s.challenge(w, r, "", errorf(http.StatusUnauthorized, CodeUnauthorized, "authentication required"))
			return
		}
		user = id.User
	}
	tok, ttl := a.issue(user)
	info(r).name = "token:" + user
	writeJSON(w, r, "application/json", map[string]any{"token": tok, "access_token": tok, "expires_in": int(ttl.Seconds()), "issued_at": time.Now().UTC().Format(time.RFC3339)})
}

// challenge answers 401 with the Bearer challenge whose realm is this
// listener's /token on the host and port the client used.
func (s *Server) challenge(w http.ResponseWriter, r *http.Request, scope string, e *Error) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	ch := fmt.Sprintf(`Bearer realm="%s://%s/token",service="clowder"`, scheme, r.Host)
	if scope != "" {
		ch += fmt.Sprintf(`,scope="%s"`, scope)
	}
	w.Header().Set("WWW-Authenticate", ch)
	writeError(w, r, e)
}

// authorize checks that the request may do action on name. It writes the
// 401 (with a challenge) or 403 and returns false when not.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, action, name, clientName string) bool {
	a := s.opts.Auth
	if a == nil {
		return true
	}
	id, err := a.identify(r)
	scope := ""
	if clientName != "" {
		acts := "pull"
		if action != "pull" {
			acts = "pull," + action
		}
		scope = "repository:" + clientName + ":" + acts
	}
	if err != nil {
		s.challenge(w, r, scope, errorf(http.StatusUnauthorized, CodeUnauthorized, "invalid credentials"))
		return false
	}
	if a.allowed(id, action, name) {
		setIdentity(r, id)
		return true
	}
	if id.Anonymous {
		s.challenge(w, r, scope, errorf(http.StatusUnauthorized, CodeUnauthorized, "authentication required"))
		return false
	}
	writeError(w, r, errorf(http.StatusForbidden, CodeDenied, fmt.Sprintf("%s may not %s %s", id.User, action, name)))
	return false
}

// actionOf maps an HTTP method to a rule action.
func actionOf(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return "pull"
	case http.MethodDelete:
		return "delete"
	}
	return "push"
}

func setIdentity(r *http.Request, id Identity) { info(r).identity = &id }

func identityOf(r *http.Request) *Identity { return info(r).identity }

func urlQueryEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
