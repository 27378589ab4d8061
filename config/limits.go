package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Defaults of the hostile-input limits.
const (
	DefaultMaxFillsPerClient = 32
	DefaultRequestTimeout    = 5 * time.Minute
)

// FillsPerClient returns max_fills_per_client (0: no cap).
func (c *Config) FillsPerClient() int {
	if c.MaxFillsPerClient == nil {
		return DefaultMaxFillsPerClient
	}
	return *c.MaxFillsPerClient
}

// WholeRequestTimeout returns request_timeout, or its default.
func (c *Config) WholeRequestTimeout() time.Duration {
	if c.RequestTimeout == 0 {
		return DefaultRequestTimeout
	}
	return time.Duration(c.RequestTimeout)
}

// UpstreamURLs returns every upstream's URL (their hosts are trusted by the
// SSRF guard on any port).
func (c *Config) UpstreamURLs() []string {
	out := make([]string, 0, len(c.Upstreams))
	for _, u := range c.Upstreams {
		out = append(out, u.URL)
	}
	return out
}

// TrustedProxyPrefixes returns trusted_proxies as prefixes (an address is
// a one-address prefix). Validate has checked every entry.
func (c *Config) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, e := range c.TrustedProxies {
		if p, err := parseTrustedProxy(e); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parseTrustedProxy(s string) (netip.Prefix, error) {
	p, ok := parsePrefixOrAddr(s)
	switch {
	case !ok:
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or an IP address", s)
	case p.Bits() == 0:
		return netip.Prefix{}, fmt.Errorf("%q would trust every peer's X-Forwarded-For: name the balancers' addresses or subnet", s)
	}
	return p, nil
}

// parsePrefixOrAddr reads a CIDR or an IP address (bracketed or not, no
// zone) as a prefix: an address is a one-address prefix.
func parsePrefixOrAddr(s string) (netip.Prefix, bool) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

func (c *Config) validateLimits() error {
	if c.MaxFillsPerClient != nil && *c.MaxFillsPerClient < 0 {
		return fmt.Errorf("max_fills_per_client: %d is negative (0 turns the cap off)", *c.MaxFillsPerClient)
	}
	for i, a := range c.AllowPrivateHosts {
		if !validAllowEntry(a) {
			return fmt.Errorf("allow_private_hosts[%d]: %q is not a CIDR, an IP address, a host name or *.domain (no scheme, no port)", i, a)
		}
	}
	for i, e := range c.TrustedProxies {
		if _, err := parseTrustedProxy(e); err != nil {
			return fmt.Errorf("trusted_proxies[%d]: %v (load balancers whose X-Forwarded-For is believed)", i, err)
		}
	}
	return nil
}

// validAllowEntry mirrors upstream.ParseAllowEntry (config cannot import
// upstream): a CIDR, an IP, a host name or *.domain.
func validAllowEntry(s string) bool {
	if _, ok := parsePrefixOrAddr(s); ok {
		return true
	}
	return ValidHostName(strings.TrimPrefix(strings.TrimSpace(s), "*."))
}

// ValidHostName reports whether s is a DNS host name (labels of letters,
// digits, '-' and '_'; a trailing dot allowed).
func ValidHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
				return false
			}
		}
	}
	return true
}
