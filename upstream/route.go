package upstream

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/clowder-dev/clowder/config"
)

// ErrUnknownNamespace means ?ns= named no configured upstream.
var ErrUnknownNamespace = errors.New("no upstream is configured for this namespace")

// ErrNoUpstream means a name matched no upstream prefix and there is no default.
var ErrNoUpstream = errors.New("no upstream serves this name")

// Upstream is a configured upstream with its Source.
type Upstream struct {
	config.Upstream
	Source Source
}

// Route is where a client's repository name goes.
type Route struct {
	Upstream *Upstream
	// Repo is the repository name on the upstream (library/alpine).
	Repo string
	// Name is the full name Clowder records (docker.io/library/alpine).
	Name string
	// ByNamespace is set when ?ns= chose the upstream.
	ByNamespace bool
}

// Router maps repository names to upstreams.
type Router struct {
	byName map[string]*Upstream
	byNS   map[string]*Upstream
	def    *Upstream
	all    []*Upstream
	ollama string
}

// dockerHubHosts all mean Docker Hub, as ?ns= values and as upstream hosts.
var dockerHubHosts = []string{"docker.io", "index.docker.io", "registry-1.docker.io"}

// IsDockerHub reports whether u is Docker Hub (by name or URL host).
func IsDockerHub(u config.Upstream) bool {
	h := u.Host()
	for _, d := range dockerHubHosts {
		if u.Name == d || h == d {
			return true
		}
	}
	return false
}

// IsDockerHubURL reports whether u's URL is Docker Hub's (its host, not its
// name: a worker's upstream named docker.io may point at a site Clowder,
// and Docker Hub credentials must not go there).
func IsDockerHubURL(u config.Upstream) bool {
	h := u.Host()
	for _, d := range dockerHubHosts {
		if h == d {
			return true
		}
	}
	return false
}

// NewRouter builds a router over upstreams (in config order).
func NewRouter(ups []*Upstream) *Router {
	r := &Router{byName: map[string]*Upstream{}, byNS: map[string]*Upstream{}}
	for _, u := range ups {
		r.all = append(r.all, u)
		r.byName[u.Name] = u
		r.byNS[u.Name] = u
		for _, a := range u.Aliases {
			r.byNS[a] = u
		}
		// The URL's host means this upstream as a ?ns= value, unless the
		// URL has a path: then the host is a site Clowder that serves
		// several upstreams, and the host alone names none of them.
		if h := u.Host(); h != "" && u.PathPrefix() == "" {
			if _, ok := r.byNS[h]; !ok {
				r.byNS[h] = u
			}
		}
		if IsDockerHub(u.Upstream) {
			for _, d := range dockerHubHosts {
				if _, ok := r.byNS[d]; !ok {
					r.byNS[d] = u
				}
			}
		}
		if u.Default {
			r.def = u
		}
		if u.Type == config.TypeOllama && r.ollama == "" {
			r.ollama = u.Name
		}
	}
	return r
}

// Upstreams returns every upstream in config order.
func (r *Router) Upstreams() []*Upstream { return r.all }

// ByName returns the upstream called name.
func (r *Router) ByName(name string) *Upstream { return r.byName[name] }

// Request is what routing looks at besides the name.
type Request struct {
	// NS is the ?ns= query value (containerd mirrors), empty when absent.
	NS string
	// ListenerDefault names the default upstream of the listener the
	// request came in on, if it has one.
	ListenerDefault string
	// UserAgent is the client's User-Agent.
	UserAgent string
}

// Route finds the upstream for a client's repository name. ns is the ?ns=
// query value (containerd mirrors), empty when absent.
func (r *Router) Route(name, ns string) (Route, error) {
	return r.RouteRequest(name, Request{NS: ns})
}

// RouteRequest routes a name: ?ns= (the path is then that upstream's own
// repository name); else a first segment naming an upstream; then the listener's own default upstream; then, for ollama clients
// (User-Agent "ollama/..."), the ollama upstream; then the default upstream.
func (r *Router) RouteRequest(name string, req Request) (Route, error) {
	first, rest, hasSlash := strings.Cut(name, "/")
	if req.NS != "" {
		// A mirror request (containerd): the path is the upstream
		// registry's own repository name, whatever its first segment is
		// called. Only a prefix naming the same upstream is dropped
		// (hosts.toml override_path setups that point at /v2/<name>/).
		u := r.byNS[strings.ToLower(req.NS)]
		if u == nil {
			return Route{}, fmt.Errorf("ns=%s: %w", url.QueryEscape(req.NS), ErrUnknownNamespace)
		}
		if hasSlash && r.byName[first] == u {
			return r.route(u, rest, true), nil
		}
		return r.route(u, name, true), nil
	}
	if hasSlash {
		if u := r.byName[first]; u != nil {
			return r.route(u, rest, false), nil
		}
	}
	if u := r.byName[req.ListenerDefault]; u != nil {
		return r.route(u, name, false), nil
	}
	if strings.HasPrefix(req.UserAgent, "ollama/") {
		if u := r.byName[r.ollama]; u != nil {
			return r.route(u, name, false), nil
		}
	}
	if r.def == nil {
		return Route{}, fmt.Errorf("%s: %w", name, ErrNoUpstream)
	}
	return r.route(r.def, name, false), nil
}

// SetOllama names the upstream for ollama clients' unprefixed names.
func (r *Router) SetOllama(name string) { r.ollama = name }

// RouteFull routes a full recorded name (docker.io/library/alpine) or a
// short one the way docker expands it (alpine -> docker.io/library/alpine).
func (r *Router) RouteFull(name string) (Route, error) {
	return r.Route(name, "")
}

func (r *Router) route(u *Upstream, repo string, byNS bool) Route {
	if IsDockerHub(u.Upstream) && !strings.Contains(repo, "/") {
		repo = "library/" + repo
	}
	return Route{Upstream: u, Repo: repo, Name: u.Name + "/" + repo, ByNamespace: byNS}
}
