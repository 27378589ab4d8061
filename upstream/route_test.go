package upstream

import (
	"errors"
	"testing"

	"github.com/clowder-dev/clowder/config"
)

func TestRoute(t *testing.T) {
	r := NewRouter([]*Upstream{
		{Upstream: config.Upstream{Name: "docker.io", URL: "https://registry-1.docker.io", Default: true}},
		{Upstream: config.Upstream{Name: "ghcr.io", URL: "https://ghcr.io"}},
		{Upstream: config.Upstream{Name: "corp", URL: "http://10.0.0.7:5000"}},
	})
	cases := []struct {
		name, ns       string
		upstream, full string
		err            error
	}{
		{"alpine", "", "docker.io", "docker.io/library/alpine", nil},
		{"library/alpine", "", "docker.io", "docker.io/library/alpine", nil},
		{"docker.io/alpine", "", "docker.io", "docker.io/library/alpine", nil},
		{"docker.io/bitnami/redis", "", "docker.io", "docker.io/bitnami/redis", nil},
		{"ghcr.io/org/a/b", "", "ghcr.io", "ghcr.io/org/a/b", nil},
		{"org/a", "ghcr.io", "ghcr.io", "ghcr.io/org/a", nil},
		{"alpine", "index.docker.io", "docker.io", "docker.io/library/alpine", nil},
		{"alpine", "registry-1.docker.io", "docker.io", "docker.io/library/alpine", nil},
		{"team/x", "10.0.0.7:5000", "corp", "corp/team/x", nil},
		{"team/x", "quay.io", "", "", ErrUnknownNamespace},
		{"corp/team/x", "", "corp", "corp/team/x", nil},
		// With ?ns=, the path is the mirrored registry's own name.
		{"ghcr.io/x", "docker.io", "docker.io", "docker.io/ghcr.io/x", nil},
		{"corp/shadow", "docker.io", "docker.io", "docker.io/corp/shadow", nil},
		{"docker.io/library/alpine", "docker.io", "docker.io", "docker.io/library/alpine", nil},
	}
	for _, c := range cases {
		rt, err := r.Route(c.name, c.ns)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("Route(%q, %q) err = %v, want %v", c.name, c.ns, err, c.err)
			}
			continue
		}
		if err != nil || rt.Upstream.Name != c.upstream || rt.Name != c.full {
			t.Errorf("Route(%q, %q) = %s %s, %v; want %s %s", c.name, c.ns, rt.Upstream.Name, rt.Name, err, c.upstream, c.full)
		}
	}
	noDefault := NewRouter([]*Upstream{{Upstream: config.Upstream{Name: "ghcr.io", URL: "https://ghcr.io"}}})
	if _, err := noDefault.Route("alpine", ""); !errors.Is(err, ErrNoUpstream) {
		t.Errorf("Route without default = %v, want ErrNoUpstream", err)
	}
}

// A worker Clowder's upstreams point at a site Clowder, the site's upstream
// name as the URL path. Names route on the worker as always; the site's
// host, shared by several upstreams, names none of them as a ?ns= value.
func TestRouteTierUpstreams(t *testing.T) {
	r := NewRouter([]*Upstream{
		{Upstream: config.Upstream{Name: "docker.io", URL: "http://site:5000/docker.io", Default: true}},
		{Upstream: config.Upstream{Name: "registry.ollama.ai", Type: config.TypeOllama, URL: "http://site:5000/registry.ollama.ai"}},
	})
	r.SetOllama("registry.ollama.ai")
	cases := []struct {
		name, ns, ua   string
		upstream, repo string
		err            error
	}{
		{"alpine", "", "", "docker.io", "library/alpine", nil},
		{"docker.io/library/alpine", "", "", "docker.io", "library/alpine", nil},
		{"library/alpine", "docker.io", "", "docker.io", "library/alpine", nil},
		{"library/qwen2", "", "ollama/0.32.15 (amd64 linux) Go/go1.26", "registry.ollama.ai", "library/qwen2", nil},
		{"registry.ollama.ai/library/qwen2", "", "", "registry.ollama.ai", "library/qwen2", nil},
		{"library/alpine", "site:5000", "", "", "", ErrUnknownNamespace},
	}
	for _, c := range cases {
		rt, err := r.RouteRequest(c.name, Request{NS: c.ns, UserAgent: c.ua})
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("RouteRequest(%q, ns=%q) err = %v, want %v", c.name, c.ns, err, c.err)
			}
			continue
		}
		if err != nil || rt.Upstream.Name != c.upstream || rt.Repo != c.repo {
			t.Errorf("RouteRequest(%q, ns=%q) = %v %q, %v; want %s %s", c.name, c.ns, rt.Upstream, rt.Repo, err, c.upstream, c.repo)
		}
	}
	// Credentials: by the URL's host, so a worker's docker.io is not Docker Hub.
	if IsDockerHubURL(config.Upstream{Name: "docker.io", URL: "http://site:5000/docker.io"}) {
		t.Error("IsDockerHubURL(docker.io at a site Clowder) = true, want false")
	}
	if !IsDockerHubURL(config.Upstream{Name: "hub", URL: "https://registry-1.docker.io"}) {
		t.Error("IsDockerHubURL(https://registry-1.docker.io) = false, want true")
	}
}
