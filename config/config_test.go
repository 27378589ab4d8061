package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	c := Default()
	if c.Listen != "127.0.0.1:5000" || c.Root != "./clowder-data" {
		t.Errorf("Default() listen %q root %q", c.Listen, c.Root)
	}
	var names []string
	for _, u := range c.Upstreams {
		names = append(names, u.Name)
	}
	if got := strings.Join(names, ","); got != "docker.io,ghcr.io,quay.io,registry.ollama.ai,huggingface.co" {
		t.Errorf("Default() upstreams = %s", got)
	}
	if d := c.DefaultUpstream(); d == nil || d.Name != "docker.io" || d.TTL() != 5*time.Minute {
		t.Errorf("DefaultUpstream() = %+v", d)
	}
}

func TestIssueExampleParses(t *testing.T) {
	c, err := Parse([]byte(`listen: 127.0.0.1:5000
root: /var/lib/clowder
upstreams:
  - name: docker.io            # path prefix and ?ns= value
    type: oci
    url: https://registry-1.docker.io
    default: true              # serves names with no known prefix (docker registry-mirrors)
    tag_ttl: 5m                # how long a tag->digest answer is trusted before a HEAD revalidates it
    # username/password, or credentials from ~/.docker/config.json for this host
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/var/lib/clowder" || c.Upstreams[0].TTL() != 5*time.Minute || !c.Upstreams[0].Default {
		t.Errorf("Parse = %+v", c)
	}
}

func TestTagTTLZero(t *testing.T) {
	c, err := Parse([]byte("upstreams:\n  - {name: a, url: 'http://127.0.0.1:1', tag_ttl: 0}\n  - {name: b, url: 'http://127.0.0.1:1', tag_ttl: 0s}\n  - {name: c, url: 'http://127.0.0.1:1'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstreams[0].TTL() != 0 || c.Upstreams[1].TTL() != 0 || c.Upstreams[2].TTL() != DefaultTagTTL {
		t.Errorf("TTLs = %v %v %v", c.Upstreams[0].TTL(), c.Upstreams[1].TTL(), c.Upstreams[2].TTL())
	}
}

func TestRefusals(t *testing.T) {
	cases := []refusal{
		{"listen: 127.0.0.1:5000\nbogus: 1\n", `unknown key "bogus"`},
		{"upstreams:\n  - name: a\n    url: http://x\n    colour: red\n", `unknown key "colour"`},
		{"upstreams:\n  - name: a\n    url: ftp://x\n", "upstreams[0] (a).url"},
		{"upstreams:\n  - name: a\n    url: 'not a url'\n", "upstreams[0] (a).url"},
		{"upstreams:\n  - name: a\n    url: https://x/Some/Path\n", "upstreams[0] (a).url"},
		{"upstreams:\n  - {name: a, url: 'http://x', default: true}\n  - {name: b, url: 'http://y', default: true}\n", "upstreams[1] (b).default"},
		{"upstreams:\n  - {name: 'Docker.IO', url: 'http://x'}\n", "upstreams[0] (Docker.IO).name"},
		{"upstreams:\n  - {name: 'host:5000', url: 'http://x'}\n", "upstreams[0] (host:5000).name"},
		{"upstreams:\n  - {name: a, url: 'http://x'}\n  - {name: a, url: 'http://y'}\n", "used twice"},
		{"upstreams:\n  - {name: a, url: 'http://x', type: svn}\n", "upstreams[0] (a).type"},
		{"upstreams:\n  - {name: a, url: 'http://x', tag_ttl: soon}\n", "not a duration"},
		{"upstreams:\n  - {name: a, url: 'http://x', username: u}\n", "password"},
		{"listen: nowhere\n", "listen"},
		{"log_level: loud\n", "log_level"},
		{"trusted_proxies: [10.0.0.0/8, lb.corp.lan]\n", "trusted_proxies[1]"},
		{"listen: 127.0.0.1:5000\nbody_idle_timeout: 1\n", `body_idle_timeout (line 2): "1" is not a duration`},
		{"trusted_proxies: 10.0.0.2\n", "trusted_proxies (line 1): cannot unmarshal"},
		{"trusted_proxies: ['::/0']\n", "trusted_proxies[0]: \"::/0\" would trust every peer"},
		{"upstreams:\n  - {name: a, url: 'http://x', tag_ttl: soon}\n", "upstreams[0].tag_ttl (line 2)"},
		{"storage:\n  s3:\n    bucket: [a, b]\n", "storage.s3.bucket (line 3)"},
		{"max_size: lots\n", "max_size (line 1)"},
		{"trusted_proxies: ['fe80::1%eth0']\n", "trusted_proxies[0]"},
	}
	checkRefusals(t, cases)
}

func TestTrustedProxies(t *testing.T) {
	c, err := Parse([]byte("trusted_proxies: [10.0.0.0/8, 192.0.2.7, '[2001:db8::1]', 10.1.2.3/16]\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range c.TrustedProxyPrefixes() {
		got = append(got, p.String())
	}
	want := "10.0.0.0/8 192.0.2.7/32 2001:db8::1/128 10.1.0.0/16"
	if strings.Join(got, " ") != want {
		t.Errorf("TrustedProxyPrefixes = %v, want %s", got, want)
	}
}

// refusal is a config Parse must refuse with a one-line error containing want.
type refusal struct{ yaml, want string }

func checkRefusals(t *testing.T, cases []refusal) {
	t.Helper()
	for _, c := range cases {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.yaml, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q) error is not one line: %q", c.yaml, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	f.Add([]byte("upstreams:\n  - {name: a, url: 'http://x', tag_ttl: 0}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c.Validate() != nil {
			t.Fatalf("Parse accepted a config Validate refuses")
		}
	})
}

func TestByteSizeAndPinned(t *testing.T) {
	for in, want := range map[string]int64{"123": 123, "500MiB": 500 << 20, "20GB": 20e9, "1.5KiB": 1536, "2G": 2 << 30, "0": 0} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-1MB", "1e30GB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", bad)
		}
	}
	c, err := Parse([]byte("max_size: 10GiB\npinned: ['docker.io/library/alpine:3.20', 'huggingface.co/org/*', 'ghcr.io/*/tool:?']\n"))
	if err != nil || c.MaxSize != 10<<30 {
		t.Fatalf("Parse = %+v, %v", c, err)
	}
	for name, want := range map[string]bool{
		"docker.io/library/alpine:3.20": true, "docker.io/library/alpine:3.21": false,
		"huggingface.co/org/m:main": true, "ghcr.io/x/tool:1": true, "ghcr.io/x/tool:10": false,
	} {
		if c.IsPinned(name) != want {
			t.Errorf("IsPinned(%s) = %v, want %v", name, !want, want)
		}
	}
	if _, err := Parse([]byte("max_size: huge\n")); err == nil || !strings.Contains(err.Error(), "not a size") {
		t.Errorf("max_size: huge = %v", err)
	}
}
