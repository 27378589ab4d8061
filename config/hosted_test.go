package config

import (
	"strings"
	"testing"
)

func TestHostedPrefix(t *testing.T) {
	if got := Default().HostedPrefix; got != "local" {
		t.Errorf("Default().HostedPrefix = %q, want local", got)
	}
	c, err := Parse([]byte("hosted_prefix: site-a\nupstreams: []\n"))
	if err != nil || c.HostedPrefix != "site-a" {
		t.Fatalf("Parse(hosted_prefix: site-a) = %+v, %v", c, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"hosted_prefix: Local\n", `hosted_prefix: "Local" is not one OCI path component`},
		{"hosted_prefix: a/b\n", `hosted_prefix: "a/b" is not one OCI path component`},
		{"hosted_prefix: docker.io\nupstreams: [{name: docker.io, url: 'https://registry-1.docker.io'}]\n", `hosted_prefix: "docker.io" is also the name of an upstream`},
	} {
		if _, err := Parse([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
