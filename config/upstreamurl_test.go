package config

import (
	"strings"
	"testing"
)

// oci and ollama upstream URLs may carry a path, a repository prefix (a
// site Clowder's upstream name); huggingface URLs may not.
func TestUpstreamURLPath(t *testing.T) {
	good := []struct{ yaml, url, prefix string }{
		{"{name: docker.io, url: 'http://site:5000/docker.io', default: true}", "http://site:5000/docker.io", "docker.io"},
		{"{name: docker.io, url: 'http://site:5000/docker.io/'}", "http://site:5000/docker.io", "docker.io"},
		{"{name: o, type: ollama, url: 'https://site/registry.ollama.ai'}", "https://site/registry.ollama.ai", "registry.ollama.ai"},
		{"{name: corp, url: 'http://site:5000/corp/mirror'}", "http://site:5000/corp/mirror", "corp/mirror"},
		{"{name: plain, url: 'http://site:5000/'}", "http://site:5000", ""},
		{"{name: huggingface.co, type: huggingface, url: 'http://site:5000'}", "http://site:5000", ""},
	}
	for _, g := range good {
		c, err := Parse([]byte("upstreams:\n  - " + g.yaml + "\n"))
		if err != nil {
			t.Errorf("Parse(%s) = %v", g.yaml, err)
			continue
		}
		if u := c.Upstreams[0]; u.URL != g.url || u.PathPrefix() != g.prefix {
			t.Errorf("Parse(%s): url %q prefix %q, want %q %q", g.yaml, u.URL, u.PathPrefix(), g.url, g.prefix)
		}
	}
	bad := []struct{ yaml, want string }{
		{"{name: h, type: huggingface, url: 'http://site:5000/huggingface.co'}", "takes no path"},
		{"{name: a, url: 'http://site:5000/Docker.IO'}", "not an OCI path component"},
		{"{name: a, url: 'http://site:5000/a%2Fb'}", "plain OCI path components"},
		{"{name: a, url: 'http://site:5000/a//b'}", "plain OCI path components"},
		{"{name: a, url: 'http://site:5000/a#frag'}", "not an http(s) URL"},
		{"{name: a, url: 'http://site:5000/a?x=1'}", "not an http(s) URL"},
	}
	for _, b := range bad {
		_, err := Parse([]byte("upstreams:\n  - " + b.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), ".url:") {
			t.Errorf("Parse(%s) = %v, want a .url error containing %q", b.yaml, err, b.want)
		}
	}
}
