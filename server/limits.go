package server

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/clowder-dev/clowder/proxy"
)

// retryAfterTooManyFills is the Retry-After (seconds) of a 429 for a client
// past its cap of running fills. A worker Clowder (or anything on a
// cas.Filler) waits that long and retries rather than relay the refusal.
var retryAfterTooManyFills = "10"

// limit applies the per-request limits of the proxy's options: a blob
// request (a stream, bounded by the fill idle timeout) carries the client's
// address, against which the fills it starts are counted; any other request
// gets the request timeout. The caller defers cancel.
func (s *Server) limit(r *http.Request, blob bool) (*http.Request, context.CancelFunc) {
	if blob {
		return r.WithContext(proxy.WithClient(r.Context(), s.clientIP(r))), func() {}
	}
	if d := s.proxy.RequestTimeout(); d > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		return r.WithContext(ctx), cancel
	}
	return r, func() {}
}

// clientIP is the address the request came from: the peer's, or, when the
// peer is one of Options.TrustedProxies (a load balancer), the one its
// X-Forwarded-For names: walking the list from the right (the entry the
// trusted peer itself appended), the first address that is not another
// trusted proxy. Entries left of that are the client's own claims and are
// never believed; an entry that is not an address stops the walk at the
// last trusted hop.
func (s *Server) clientIP(r *http.Request) string {
	peer := r.RemoteAddr
	if h, _, err := net.SplitHostPort(peer); err == nil {
		peer = h
	}
	if len(s.opts.TrustedProxies) == 0 {
		return peer
	}
	client, err := netip.ParseAddr(peer)
	if err != nil || !trusted(s.opts.TrustedProxies, client) {
		return peer
	}
	hops := forwardedFor(r.Header.Values("X-Forwarded-For"))
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := parseHop(hops[i])
		if err != nil {
			break
		}
		client = a
		if !trusted(s.opts.TrustedProxies, a) {
			break
		}
	}
	return client.String()
}

// forwardedFor splits X-Forwarded-For header lines into their entries, in
// order (a proxy may append a line of its own instead of extending one).
func forwardedFor(lines []string) []string {
	var hops []string
	for _, l := range lines {
		for _, h := range strings.Split(l, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	return hops
}

// parseHop reads one X-Forwarded-For entry: an address, bracketed or not,
// with a port or without.
func parseHop(h string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	return a.Unmap(), err
}

func trusted(prefixes []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
