package upstream

import (
	"context"
	"errors"
	"fmt"
	"github.com/clowder-dev/clowder/config"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrBlockedAddress means an upstream request would have reached a private,
// loopback, link-local or otherwise non-public address that the SSRF policy
// does not allow (see Guard).
var ErrBlockedAddress = errors.New("address refused by the SSRF guard")

// BlockedError is a refused destination: the host a request named and, when
// known, the address it resolved to.
type BlockedError struct {
	Host string     // the URL's host name or IP literal
	Addr netip.Addr // the refused address (invalid when the host itself was refused)
	Kind string     // loopback, private, link-local, ...
}

func (e *BlockedError) Error() string {
	a := e.Host
	if e.Addr.IsValid() && e.Addr.String() != e.Host {
		a += " (" + e.Addr.String() + ")"
	}
	return fmt.Sprintf("refused to connect to %s, a %s address: it is not a configured upstream's host and not in allow_private_hosts", a, e.Kind)
}

// Is makes errors.Is(err, ErrBlockedAddress) true.
func (e *BlockedError) Is(target error) bool { return target == ErrBlockedAddress }

// Guard is the SSRF policy of every upstream connection. An upstream names
// other hosts in redirects (blob 307s to object stores, the hub's 302s to its
// CDN, ollama's presigned URLs), token realms and pagination links; none of
// them may reach a private, loopback, link-local or otherwise non-public
// address unless that host is
//
//   - the host of a configured upstream, on any port (a LAN registry's token
//     server often listens on another port of the same host; loopback tests
//     run everything on 127.0.0.1), or
//   - allowed in config (allow_private_hosts): a CIDR ("10.0.0.0/8"), an IP
//     ("10.0.0.7"), a host name ("token.corp.lan") or a domain suffix
//     ("*.corp.lan"), on any port.
//
// The check runs twice: on every request's URL before it is sent (each
// redirect hop and token realm passes through the transport, so the refusal
// names the URL), and on the address actually dialled (net.Dialer.Control),
// so a host name that resolves, or later re-resolves (DNS rebinding), to a
// private address is refused too. Trusted host names are dialled whatever
// they resolve to.
type Guard struct {
	names    map[string]bool // trusted host names and IP literals (lower-case)
	suffixes []string        // ".corp.lan" for "*.corp.lan"
	nets     []netip.Prefix  // allowed non-public ranges

	mu      sync.Mutex
	proxies map[string]bool // hosts of HTTP(S) proxies from the environment (the operator's)
}

// NewGuard returns the policy for upstreams at upstreamURLs with the
// allow_private_hosts entries allow.
func NewGuard(upstreamURLs []string, allow []string) (*Guard, error) {
	g := &Guard{names: map[string]bool{}, proxies: map[string]bool{}}
	for _, s := range upstreamURLs {
		u, err := url.Parse(s)
		if err != nil || u.Hostname() == "" {
			return nil, fmt.Errorf("upstream URL %q has no host", s)
		}
		g.names[normHost(u.Hostname())] = true
	}
	for _, a := range allow {
		kind, err := ParseAllowEntry(a)
		if err != nil {
			return nil, err
		}
		a = strings.TrimSpace(a)
		switch kind {
		case "cidr":
			p, _ := netip.ParsePrefix(a)
			g.nets = append(g.nets, p.Masked())
		case "ip":
			ip, _ := netip.ParseAddr(strings.Trim(a, "[]"))
			ip = ip.Unmap()
			g.nets = append(g.nets, netip.PrefixFrom(ip, ip.BitLen()))
		case "suffix":
			g.suffixes = append(g.suffixes, normHost(a[1:])) // "*.corp.lan" -> ".corp.lan"
		default:
			g.names[normHost(a)] = true
		}
	}
	return g, nil
}

// ParseAllowEntry checks one allow_private_hosts entry and reports its kind:
// "cidr", "ip", "suffix" (*.domain) or "name".
func ParseAllowEntry(s string) (string, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil && p.IsValid() {
		return "cidr", nil
	}
	if ip, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil && ip.Zone() == "" {
		return "ip", nil
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		if validHostName(rest) {
			return "suffix", nil
		}
	} else if validHostName(s) {
		return "name", nil
	}
	return "", fmt.Errorf("%q is not a CIDR, an IP address, a host name or *.domain (no scheme, no port)", s)
}

func validHostName(s string) bool { return config.ValidHostName(s) }

func normHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap().String()
	}
	return h
}

// trusted reports whether host (a name or IP literal) may be reached
// whatever address it has.
func (g *Guard) trusted(host string) bool {
	h := normHost(host)
	if g.names[h] {
		return true
	}
	for _, s := range g.suffixes {
		if strings.HasSuffix(h, s) {
			return true
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.proxies[h]
}

// allowedIP reports whether a non-public ip is allowed by config.
func (g *Guard) allowedIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range g.nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// CheckAddr refuses ip (reached as host) unless it is public or allowed.
func (g *Guard) CheckAddr(host string, ip netip.Addr) error {
	kind := AddrKind(ip)
	if kind == "" || g.allowedIP(ip) {
		return nil
	}
	return &BlockedError{Host: host, Addr: ip.Unmap(), Kind: kind}
}

// CheckURL is the check before a request is sent: a trusted host passes; an
// IP literal must be public or allowed; other host names are checked when
// dialled (their addresses are only known then).
func (g *Guard) CheckURL(u *url.URL) error {
	host := u.Hostname()
	if host == "" {
		return &BlockedError{Host: u.Host, Kind: "empty"}
	}
	if g.trusted(host) {
		return nil
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return g.CheckAddr(host, ip)
	}
	return nil
}

// control is the net.Dialer hook: the address about to be connected.
func (g *Guard) control(host string) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &BlockedError{Host: host, Kind: "unparsable"}
		}
		return g.CheckAddr(host, ap.Addr())
	}
}

// DialContext returns a dial function that refuses non-public addresses of
// untrusted hosts at connect time.
func (g *Guard) DialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if g.trusted(host) {
			return d.DialContext(ctx, network, addr)
		}
		checked := *d
		checked.Control = g.control(host)
		checked.ControlContext = nil
		return checked.DialContext(ctx, network, addr)
	}
}

// Transport puts t under the guard: its dialer checks every address, its
// proxy hosts (from the environment: the operator's) are trusted, and every
// request (each redirect hop, each token realm) is checked before it is
// sent. Through an HTTP(S) proxy, which resolves names itself, a host name is
// resolved here and each of its addresses checked before the request.
func (g *Guard) Transport(t *http.Transport) http.RoundTripper {
	inner := t.Proxy
	t.Proxy = func(r *http.Request) (*url.URL, error) {
		if inner == nil {
			return nil, nil
		}
		pu, err := inner(r)
		if pu != nil {
			g.mu.Lock()
			g.proxies[normHost(pu.Hostname())] = true
			g.mu.Unlock()
		}
		return pu, err
	}
	t.DialContext = g.DialContext(&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second})
	return &guarded{g: g, next: t}
}

type guarded struct {
	g    *Guard
	next *http.Transport
}

func (t *guarded) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.g.CheckURL(r.URL); err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	host := r.URL.Hostname()
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil && !t.g.trusted(host) && t.next.Proxy != nil {
		if pu, perr := t.next.Proxy(r); perr == nil && pu != nil {
			// The proxy dials, not us: check what the name resolves to now.
			// Where DNS does not answer here, the proxy decides.
			if ips, lerr := net.DefaultResolver.LookupNetIP(r.Context(), "ip", host); lerr == nil {
				for _, ip := range ips {
					if err := t.g.CheckAddr(host, ip); err != nil {
						if r.Body != nil {
							r.Body.Close()
						}
						return nil, err
					}
				}
			}
		}
	}
	return t.next.RoundTrip(r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the transport.
func (t *guarded) CloseIdleConnections() { t.next.CloseIdleConnections() }

var specialNets = []struct {
	p    netip.Prefix
	kind string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("100::/64"), "discard"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
}

var (
	nat64     = []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96"), netip.MustParsePrefix("64:ff9b:1::/48")}
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// AddrKind returns why ip is not a public unicast address ("loopback",
// "private", "link-local", ...), or "" when it is public. IPv4-mapped,
// NAT64 and 6to4 addresses are judged by the IPv4 address they carry.
func AddrKind(ip netip.Addr) string {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return "invalid"
	}
	if ip.Is6() {
		b := ip.As16()
		for _, p := range nat64 {
			if p.Contains(ip) {
				if k := AddrKind(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})); k != "" {
					return k + " (NAT64)"
				}
			}
		}
		if sixToFour.Contains(ip) {
			if k := AddrKind(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})); k != "" {
				return k + " (6to4)"
			}
		}
	}
	switch {
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsInterfaceLocalMulticast(), ip.IsMulticast():
		return "multicast"
	}
	for _, s := range specialNets {
		if s.p.Contains(ip) {
			return s.kind
		}
	}
	return ""
}
