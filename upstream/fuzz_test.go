package upstream_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/upstream"
)

// Routing a name the server accepted yields names that stay valid: the
// recorded name is the upstream's name plus the repository, and neither can
// hold "..", an empty segment or a leading slash (they become paths of
// hosted repositories and parts of upstream URLs).
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"alpine", "library/alpine", "docker.io/alpine", "ghcr.io/org/a/b", "corp/team/x", "../x", "a/../b", "docker.io", "docker.io/", ""} {
		f.Add(s, "", "")
		f.Add(s, "ghcr.io", "ollama/0.3")
	}
	f.Add("team/x", "10.0.0.7:5000", "")
	f.Add("library/qwen2", "", "ollama/0.5")
	r := upstream.NewRouter([]*upstream.Upstream{
		{Upstream: config.Upstream{Name: "docker.io", URL: "https://registry-1.docker.io", Default: true}},
		{Upstream: config.Upstream{Name: "ghcr.io", URL: "https://ghcr.io", Aliases: []string{"gh"}}},
		{Upstream: config.Upstream{Name: "corp", URL: "http://10.0.0.7:5000"}},
		{Upstream: config.Upstream{Name: "registry.ollama.ai", Type: config.TypeOllama, URL: "https://registry.ollama.ai"}},
	})
	f.Fuzz(func(t *testing.T, name, ns, ua string) {
		rt, err := r.RouteRequest(name, upstream.Request{NS: ns, UserAgent: ua})
		if err != nil {
			return
		}
		if rt.Upstream == nil || rt.Name != rt.Upstream.Name+"/"+rt.Repo {
			t.Fatalf("Route(%q, %q) = %+v: Name is not upstream/repo", name, ns, rt)
		}
		if !proxy.ValidName(name) {
			return
		}
		if !proxy.ValidName(rt.Repo) || !proxy.ValidName(rt.Name) || strings.Contains(rt.Name, "..") || strings.HasPrefix(rt.Repo, "/") {
			t.Fatalf("Route(%q, %q) = repo %q name %q: a valid name became an invalid one", name, ns, rt.Repo, rt.Name)
		}
		if !strings.HasSuffix(name, rt.Repo) && !strings.HasPrefix(rt.Repo, "library/") {
			t.Fatalf("Route(%q, %q) = repo %q: not a part of the name", name, ns, rt.Repo)
		}
	})
}

// The SSRF guard and the config validation agree on allow_private_hosts.
func FuzzAllowEntry(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.0.0.7", "[::1]", "token.corp.lan", "*.corp.lan", "http://x", "a:1", "fe80::1%eth0", "*.", "_x.y"} {
		f.Add(s)
	}
	base := config.Default()
	f.Fuzz(func(t *testing.T, s string) {
		_, perr := upstream.ParseAllowEntry(s)
		c := *base
		c.Upstreams = slices.Clone(base.Upstreams)
		c.AllowPrivateHosts = []string{s}
		verr := c.Validate()
		if (perr == nil) != (verr == nil) {
			t.Fatalf("allow_private_hosts %q: guard says %v, config says %v", s, perr, verr)
		}
		if perr == nil {
			if _, err := upstream.NewGuard(nil, []string{s}); err != nil {
				t.Fatalf("NewGuard(%q) = %v after ParseAllowEntry accepted it", s, err)
			}
		}
	})
}
