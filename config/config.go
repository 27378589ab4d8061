package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Upstream types.
const (
	TypeOCI         = "oci"
	TypeOllama      = "ollama"
	TypeHuggingFace = "huggingface"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default configuration file.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Config is the whole configuration of a Clowder process.
type Config struct {
	// Listen is the address the registry listener binds, host:port.
	Listen string `yaml:"listen"`
	// Root is the directory holding the OCI image layout (the cache).
	Root string `yaml:"root"`
	// Upstreams are the registries Clowder pulls through to.
	Upstreams []Upstream `yaml:"upstreams"`
	// UpstreamTimeout bounds one whole upstream request for a cold object.
	UpstreamTimeout Duration `yaml:"upstream_timeout"`
	// RevalidateTimeout bounds the wait for an upstream answer when a cached
	// copy exists and could be served instead (upstream down or slow).
	RevalidateTimeout Duration `yaml:"revalidate_timeout"`
	// FillIdleTimeout aborts (and resumes) an upstream blob fetch that sends
	// no byte for this long.
	FillIdleTimeout Duration `yaml:"fill_idle_timeout"`
	// LogLevel is one of debug, info, warn, error.
	LogLevel string `yaml:"log_level"`
	// Listeners are further addresses to serve on, each optionally with its
	// own default upstream (so a second port can serve a company registry
	// to ollama clients, whose names have no room for an upstream prefix).
	Listeners []Listener `yaml:"listeners"`
	// OllamaUpstream names the upstream that serves requests whose
	// User-Agent starts with "ollama/" and whose name has no upstream
	// prefix. Default: the first upstream of type ollama.
	OllamaUpstream string `yaml:"ollama_upstream"`
	// PublicURL is the base URL clients reach Clowder at, when a load
	// balancer or TLS terminator sits in front (Hugging Face pagination
	// links point there). Default: the request's Host.
	PublicURL string `yaml:"public_url"`
	// MaxSize bounds the bytes the cache's names reference ("500GiB",
	// "20GB", a number of bytes); 0 is unbounded. Past it, whole names are
	// evicted, least recently used first, and their blobs collected.
	MaxSize ByteSize `yaml:"max_size"`
	// Auth configures client authentication (off unless credentials are
	// configured here).
	Auth Auth `yaml:"auth"`
	// TLSCert and TLSKey (PEM files) make the main listener serve HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Pinned names are never evicted: exact names, globs (path.Match), or
	// prefixes ending in "*" ("huggingface.co/org/*").
	Pinned []string `yaml:"pinned"`
	// JanitorInterval is how often last-use times are written to
	// index.json and max_size is enforced. Default 1m.
	JanitorInterval Duration `yaml:"janitor_interval"`
	// HostedPrefix is the first name segment of hosted repositories, which
	// clients push to (local/team/model:v1); one OCI path component that
	// names no upstream. Default: local.
	HostedPrefix string `yaml:"hosted_prefix"`

	// Hostile-input limits and the SSRF policy (see limits.go, SECURITY.md).

	// AllowPrivateHosts are private, loopback or link-local destinations
	// that upstream redirects and token realms may reach besides the
	// configured upstreams' own hosts (on any port): CIDRs ("10.0.0.0/8"),
	// IP addresses, host names ("token.corp.lan") or "*.corp.lan".
	AllowPrivateHosts []string `yaml:"allow_private_hosts"`
	// MaxFillsPerClient bounds the uncached blob fetches one client IP may
	// have running; past it a cold blob gets 429 with Retry-After. Default
	// 32; 0 turns the cap off.
	MaxFillsPerClient *int `yaml:"max_fills_per_client"`
	// TrustedProxies are the load balancers in front of Clowder (CIDRs or
	// IP addresses): from them, X-Forwarded-For names the client, so the
	// per-client fill cap and the access log see each client rather than
	// the balancer. Default none: the header is ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MaxUploadSize bounds one blob pushed to a hosted repository ("10GiB");
	// 0 (the default) is unbounded.
	MaxUploadSize ByteSize `yaml:"max_upload_size"`
	// RequestTimeout bounds a whole non-blob request (manifests, tags,
	// referrers, the Hugging Face API). Default 5m. Blob streams are
	// bounded by fill_idle_timeout instead.
	RequestTimeout Duration `yaml:"request_timeout"`
	// BodyIdleTimeout fails a request whose body (a pushed blob or
	// manifest) sends nothing for this long: 408. Default 1m.
	BodyIdleTimeout Duration `yaml:"body_idle_timeout"`

	// Scale-out (storage.go).

	// Storage selects the backend: local (the layout under root) or s3.
	Storage Storage `yaml:"storage"`
	// Advertise is how other replicas reach this one (http://10.0.0.5:5000):
	// they stream a fill this replica owns from here. Default: the listen
	// address, when it is not a wildcard.
	Advertise string `yaml:"advertise"`
	// LocalCacheSize bounds the local read copies of blobs an s3 replica
	// keeps under root ("50GiB"); 0 keeps none: every hit streams from
	// the bucket.
	LocalCacheSize ByteSize `yaml:"local_cache_size"`
}

// Auth is client authentication and authorization.
type Auth struct {
	// Htpasswd is an htpasswd file of bcrypt entries (htpasswd -B).
	Htpasswd string `yaml:"htpasswd"`
	// Tokens are static bearer tokens (also accepted as a Basic password).
	Tokens []StaticToken `yaml:"tokens"`
	// OllamaKeys are ollama clients' ed25519 public keys (the line in
	// ~/.ollama/id_ed25519.pub); the client signs its token request.
	OllamaKeys []OllamaKey `yaml:"ollama_keys"`
	// Groups maps a group name to its users.
	Groups map[string][]string `yaml:"groups"`
	// Rules grant actions (pull, push, delete) on names; the first rule
	// whose names and principals match decides. Without rules every
	// authenticated user may do everything.
	Rules []AuthRule `yaml:"rules"`
	// Anonymous lets clients without credentials in, as user "anonymous",
	// subject to the rules.
	Anonymous bool `yaml:"anonymous"`
	// TokenSecret signs the tokens Clowder issues (and presigned blob
	// URLs); default: derived from storage.s3.secret_key on the s3 backend
	// (replicas share it), else random per process. Set it when replicas
	// of local stores share a load balancer.
	TokenSecret string `yaml:"token_secret"`
	// TokenTTL is the lifetime of issued tokens. Default 15m.
	TokenTTL Duration `yaml:"token_ttl"`
}

// Enabled reports whether any client credentials are configured.
func (a Auth) Enabled() bool {
	return a.Htpasswd != "" || len(a.Tokens) > 0 || len(a.OllamaKeys) > 0
}

// StaticToken is a bearer token for a user.
type StaticToken struct {
	User  string `yaml:"user"`
	Token string `yaml:"token"`
}

// OllamaKey is an ollama client's public key for a user.
type OllamaKey struct {
	User string `yaml:"user"`
	Key  string `yaml:"key"`
}

// AuthRule grants actions on names to users and groups.
type AuthRule struct {
	// Names are exact names, globs, or prefixes ending in "*" (matched
	// against the full name: docker.io/library/alpine, local/team/model).
	Names []string `yaml:"names"`
	// Users ("*" is every authenticated user, "anonymous" the anonymous one).
	Users  []string `yaml:"users"`
	Groups []string `yaml:"groups"`
	// Actions: pull, push, delete.
	Actions []string `yaml:"actions"`
}

// Listener is an extra address Clowder serves on.
type Listener struct {
	// Listen is host:port.
	Listen string `yaml:"listen"`
	// DefaultUpstream names the upstream for names without a known prefix
	// on this listener (it wins over the User-Agent rule for ollama).
	DefaultUpstream string `yaml:"default_upstream"`
	// TLSCert and TLSKey make this listener serve HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
}

// Upstream is one registry Clowder pulls through to.
type Upstream struct {
	// Name is the path prefix and ?ns= value; names in index.json start with it.
	Name string `yaml:"name"`
	// Type is oci, ollama or huggingface.
	Type string `yaml:"type"`
	// URL is the base URL of the upstream: scheme and host; for oci and
	// ollama upstreams optionally a path, the repository prefix every name
	// is sent under (a site Clowder's upstream: http://site:5000/docker.io).
	URL string `yaml:"url"`
	// Default makes this upstream serve names with no known prefix.
	Default bool `yaml:"default"`
	// TagTTL is how long a tag->digest answer is trusted before a HEAD
	// revalidates it; 0 revalidates on every request.
	TagTTL *Duration `yaml:"tag_ttl"`
	// Username and Password authenticate to the upstream; when empty the
	// credentials for the URL's host in ~/.docker/config.json are used.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Token is a Hugging Face access token (type huggingface); when empty
	// $HF_TOKEN is used.
	Token string `yaml:"token"`
	// Aliases are further ?ns= values that mean this upstream.
	Aliases []string `yaml:"aliases"`
}

// DefaultTagTTL is used when an upstream sets no tag_ttl.
const DefaultTagTTL = 5 * time.Minute

// TTL returns the upstream's tag TTL.
func (u Upstream) TTL() time.Duration {
	if u.TagTTL == nil {
		return DefaultTagTTL
	}
	return time.Duration(*u.TagTTL)
}

// Host returns the host[:port] of the upstream URL.
func (u Upstream) Host() string {
	p, err := url.Parse(u.URL)
	if err != nil {
		return ""
	}
	return p.Host
}

// Duration is a time.Duration that reads from YAML as "5m", "30s" or 0.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if s == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (like 30s, 5m)", n.Line, s)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration %q is negative", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// ByteSize is a size in bytes that reads from YAML as 123, "500MiB", "20GB".
type ByteSize int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*b = ByteSize(v)
	return nil
}

// ParseByteSize reads "123", "500MiB", "20GB", "1.5TiB" (KB/MB/GB/TB are
// powers of 1000, KiB/MiB/GiB/TiB of 1024).
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*mult > 1<<62 {
		return 0, fmt.Errorf("%q is not a size (like 500MiB, 20GB)", s)
	}
	return int64(v * mult), nil
}

// IsPinned reports whether name matches a pinned pattern.
func (c *Config) IsPinned(name string) bool {
	for _, p := range c.Pinned {
		if p == name {
			return true
		}
		if strings.HasSuffix(p, "*") && strings.HasPrefix(name, strings.TrimSuffix(p, "*")) {
			return true
		}
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// Default returns the embedded default configuration.
func Default() *Config {
	c, err := Parse(defaultYAML)
	if err != nil {
		panic("embedded default config: " + err.Error())
	}
	return c
}

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML strictly (unknown keys are errors), fills defaults and
// validates the result.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, errEOF()) {
		return nil, cleanYAMLError(err, b)
	}
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func errEOF() error { return ioEOF }

func cleanYAMLError(err error, src []byte) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(msg)
	if j := strings.Index(msg, "\n"); j >= 0 {
		msg = msg[:j]
	}
	// "line 3: field foo not found in type config.Config" -> name the key.
	if i := strings.Index(msg, "field "); i >= 0 && strings.Contains(msg, " not found in type ") {
		rest := msg[i+len("field "):]
		key := rest[:strings.Index(rest, " ")]
		line := strings.TrimSuffix(msg[:i], ": ")
		return fmt.Errorf("unknown key %q (%s)", key, line)
	}
	// "line 3: "1" is not a duration" -> "body_idle_timeout (line 3): ...".
	if m := lineErrRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		val := ""
		if v := quotedRE.FindStringSubmatch(m[2]); v != nil {
			val = v[1] + v[2]
		}
		if key := keyAt(src, line, val); key != "" {
			return fmt.Errorf("%s (line %d): %s", key, line, strings.TrimPrefix(m[2], "yaml: "))
		}
	}
	return errors.New(msg)
}

var (
	lineErrRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	quotedRE  = regexp.MustCompile("\"([^\"]*)\"|`([^`]*)`")
)

// keyAt returns the dotted path of the key whose value is on line: the
// scalar val, or (val "") a list or mapping where yaml wanted otherwise.
// That is the key a type or value error is about.
func keyAt(src []byte, line int, val string) string {
	var root yaml.Node
	if yaml.Unmarshal(src, &root) != nil {
		return ""
	}
	found := ""
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				walk(v, p) // the deepest key on the line first
				scalar := v.Kind == yaml.ScalarNode
				if found == "" && v.Line == line && ((val == "" && !scalar) || (scalar && v.Value == val)) {
					found = p
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(&root, "")
	return found
}

func (c *Config) fillDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:5000"
	}
	if c.Root == "" {
		c.Root = "./clowder-data"
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = Duration(30 * time.Minute)
	}
	if c.RevalidateTimeout == 0 {
		c.RevalidateTimeout = Duration(5 * time.Second)
	}
	if c.FillIdleTimeout == 0 {
		c.FillIdleTimeout = Duration(30 * time.Second)
	}
	if c.BodyIdleTimeout == 0 {
		c.BodyIdleTimeout = Duration(time.Minute)
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Auth.TokenTTL == 0 {
		c.Auth.TokenTTL = Duration(15 * time.Minute)
	}
	if c.JanitorInterval == 0 {
		c.JanitorInterval = Duration(time.Minute)
	}
	if c.HostedPrefix == "" {
		c.HostedPrefix = "local"
	}
	for i := range c.Upstreams {
		if c.Upstreams[i].Type == "" {
			c.Upstreams[i].Type = TypeOCI
		}
	}
}

var componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)

// ValidComponent reports whether s is one valid OCI repository path component.
func ValidComponent(s string) bool { return componentRE.MatchString(s) }

// Validate checks the configuration and returns a one-line error naming the
// offending key.
func (c *Config) Validate() error {
	if _, _, err := splitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %q: %v", c.Listen, err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	seen := map[string]bool{}
	byName := map[string]Upstream{}
	for _, u := range c.Upstreams {
		byName[u.Name] = u
	}
	def := ""
	for i, u := range c.Upstreams {
		key := fmt.Sprintf("upstreams[%d]", i)
		if u.Name == "" {
			return fmt.Errorf("%s.name: missing", key)
		}
		key = fmt.Sprintf("upstreams[%d] (%s)", i, u.Name)
		if !ValidComponent(u.Name) {
			return fmt.Errorf("%s.name: %q is not one OCI path component (lower-case letters, digits, '.', '_', '-'; no port)", key, u.Name)
		}
		for _, n := range append([]string{u.Name}, u.Aliases...) {
			if seen[n] {
				return fmt.Errorf("%s.name: %q is used twice", key, n)
			}
			seen[n] = true
		}
		switch u.Type {
		case TypeOCI, TypeOllama, TypeHuggingFace:
		default:
			return fmt.Errorf("%s.type: %q is not one of oci, ollama, huggingface", key, u.Type)
		}
		norm, err := checkUpstreamURL(u)
		if err != nil {
			return fmt.Errorf("%s.url: %v", key, err)
		}
		c.Upstreams[i].URL = norm
		if u.Default {
			if u.Type == TypeHuggingFace {
				return fmt.Errorf("%s.default: a huggingface upstream cannot be the default OCI upstream", key)
			}
			if def != "" {
				return fmt.Errorf("%s.default: %q is already the default upstream", key, def)
			}
			def = u.Name
		}
		if (u.Username == "") != (u.Password == "") {
			return fmt.Errorf("%s.password: username and password go together", key)
		}
	}
	if c.PublicURL != "" {
		if p, err := url.Parse(c.PublicURL); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.RawQuery != "" {
			return fmt.Errorf("public_url: %q is not an http(s) URL", c.PublicURL)
		}
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	if err := c.validateStorage(); err != nil {
		return err
	}
	if !ValidComponent(c.HostedPrefix) {
		return fmt.Errorf("hosted_prefix: %q is not one OCI path component (lower-case letters, digits, '.', '_', '-')", c.HostedPrefix)
	}
	if _, ok := byName[c.HostedPrefix]; ok {
		return fmt.Errorf("hosted_prefix: %q is also the name of an upstream", c.HostedPrefix)
	}
	if c.OllamaUpstream != "" {
		if _, ok := byName[c.OllamaUpstream]; !ok {
			return fmt.Errorf("ollama_upstream: %q names no upstream", c.OllamaUpstream)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls_key: tls_cert and tls_key go together")
	}
	for i, r := range c.Auth.Rules {
		for _, a := range r.Actions {
			if a != "pull" && a != "push" && a != "delete" {
				return fmt.Errorf("auth.rules[%d].actions: %q is not one of pull, push, delete", i, a)
			}
		}
		if len(r.Names) == 0 || (len(r.Users) == 0 && len(r.Groups) == 0) {
			return fmt.Errorf("auth.rules[%d]: a rule needs names and users or groups", i)
		}
	}
	for i, t := range c.Auth.Tokens {
		if t.User == "" || len(t.Token) < 16 {
			return fmt.Errorf("auth.tokens[%d]: a token needs a user and at least 16 characters", i)
		}
	}
	for i, k := range c.Auth.OllamaKeys {
		if k.User == "" || !strings.HasPrefix(k.Key, "ssh-ed25519 ") {
			return fmt.Errorf("auth.ollama_keys[%d]: want a user and an \"ssh-ed25519 AAAA...\" key", i)
		}
	}
	addrs := map[string]bool{c.Listen: true}
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		if _, _, err := splitHostPort(l.Listen); err != nil {
			return fmt.Errorf("%s.listen: %q: %v", key, l.Listen, err)
		}
		if addrs[l.Listen] {
			return fmt.Errorf("%s.listen: %q is used twice", key, l.Listen)
		}
		addrs[l.Listen] = true
		if (l.TLSCert == "") != (l.TLSKey == "") {
			return fmt.Errorf("%s.tls_key: tls_cert and tls_key go together", key)
		}
		if l.DefaultUpstream != "" {
			if _, ok := byName[l.DefaultUpstream]; !ok {
				return fmt.Errorf("%s.default_upstream: %q names no upstream", key, l.DefaultUpstream)
			}
		}
	}
	return nil
}

// OllamaUpstreamName returns the upstream for ollama clients' unprefixed
// names: ollama_upstream, else the first upstream of type ollama, else "".
func (c *Config) OllamaUpstreamName() string {
	if c.OllamaUpstream != "" {
		return c.OllamaUpstream
	}
	for _, u := range c.Upstreams {
		if u.Type == TypeOllama {
			return u.Name
		}
	}
	return ""
}

// DefaultUpstream returns the upstream marked default, or nil.
func (c *Config) DefaultUpstream() *Upstream {
	for i := range c.Upstreams {
		if c.Upstreams[i].Default {
			return &c.Upstreams[i]
		}
	}
	return nil
}
