package server

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

// Which address a request is counted against: the peer, unless the peer is
// a trusted proxy; then the rightmost X-Forwarded-For entry that is not
// itself a trusted proxy. Entries the client wrote (left of that) are never
// believed.
func TestClientIP(t *testing.T) {
	lbs := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}
	cases := []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     []string
		want    string
	}{
		{"no trust: header ignored", nil, "192.0.2.7:4000", []string{"198.51.100.1"}, "192.0.2.7"},
		{"untrusted peer: header ignored", lbs, "192.0.2.7:4000", []string{"198.51.100.1"}, "192.0.2.7"},
		{"balancer: its entry", lbs, "10.0.0.2:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"balancer, no header: the balancer", lbs, "10.0.0.2:4000", nil, "10.0.0.2"},
		{"client's own claim left of it ignored", lbs, "10.0.0.2:4000", []string{"203.0.113.9, 198.51.100.1"}, "198.51.100.1"},
		{"two balancers", lbs, "10.0.0.2:4000", []string{"198.51.100.1, 10.0.0.3"}, "198.51.100.1"},
		{"two header lines", lbs, "10.0.0.2:4000", []string{"203.0.113.9", "198.51.100.1"}, "198.51.100.1"},
		{"entry with a port", lbs, "10.0.0.2:4000", []string{"198.51.100.1:5555"}, "198.51.100.1"},
		{"IPv6 through IPv6 balancer", lbs, "[fd00::5]:4000", []string{"[2001:db8::1]:80"}, "2001:db8::1"},
		{"IPv4-mapped peer", lbs, "[::ffff:10.0.0.2]:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"garbage stops at the balancer", lbs, "10.0.0.2:4000", []string{"198.51.100.1, not-an-ip"}, "10.0.0.2"},
		{"garbage behind a trusted hop", lbs, "10.0.0.2:4000", []string{"junk, 10.0.0.3"}, "10.0.0.3"},
		{"all trusted: the leftmost", lbs, "10.0.0.2:4000", []string{"10.0.0.4, 10.0.0.3"}, "10.0.0.4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Server{opts: Options{TrustedProxies: c.trusted}}
			r := httptest.NewRequest("GET", "/v2/", nil)
			r.RemoteAddr = c.peer
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientIP(r); got != c.want {
				t.Errorf("clientIP = %q, want %q", got, c.want)
			}
		})
	}
}
