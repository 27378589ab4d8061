package upstream

import (
	"testing"
)

func TestParseChallenge(t *testing.T) {
	cases := []struct {
		in      string
		scheme  string
		params  map[string]string
		wantErr bool
	}{
		{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`, "bearer",
			map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/alpine:pull"}, false},
		{`bearer realm=http://10.0.0.7:5001/token, service=reg`, "bearer", map[string]string{"realm": "http://10.0.0.7:5001/token", "service": "reg"}, false},
		{`Bearer realm="a\"b",scope="repository:team/a/b/c:pull,push"`, "bearer", map[string]string{"realm": `a"b`, "scope": "repository:team/a/b/c:pull,push"}, false},
		{`Basic realm="Registry Realm"`, "basic", map[string]string{"realm": "Registry Realm"}, false},
		{`Bearer realm="unterminated`, "", nil, true},
		{``, "", nil, true},
		{`"quoted"`, "", nil, true},
	}
	for _, c := range cases {
		got, err := ParseChallenge(c.in)
		if (err != nil) != c.wantErr {
			t.Errorf("ParseChallenge(%q) err = %v, want error %v", c.in, err, c.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if got.Scheme != c.scheme {
			t.Errorf("ParseChallenge(%q).Scheme = %q, want %q", c.in, got.Scheme, c.scheme)
		}
		for k, v := range c.params {
			if got.Params[k] != v {
				t.Errorf("ParseChallenge(%q)[%s] = %q, want %q", c.in, k, got.Params[k], v)
			}
		}
	}
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`)
	f.Add(`Basic realm="x"`)
	f.Add(`Bearer realm="a\"b`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseChallenge(s)
		if err == nil && c.Scheme == "" {
			t.Fatalf("ParseChallenge(%q) accepted an empty scheme", s)
		}
	})
}
