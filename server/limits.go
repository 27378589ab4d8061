package server

import (
	"context"
	"net"
	"net/http"

	"github.com/clowder-dev/clowder/proxy"
)

// RetryAfterTooManyFills is the Retry-After (seconds) of a 429 for a client
// past its cap of running fills.
const RetryAfterTooManyFills = "10"

// limit applies the per-request limits of the proxy's options: a blob
// request (a stream, bounded by the fill idle timeout) carries the client's
// address, against which the fills it starts are counted; any other request
// gets the request timeout. The caller defers cancel.
func (s *Server) limit(r *http.Request, blob bool) (*http.Request, context.CancelFunc) {
	if blob {
		return r.WithContext(proxy.WithClient(r.Context(), clientIP(r))), func() {}
	}
	if d := s.proxy.RequestTimeout(); d > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		return r.WithContext(ctx), cancel
	}
	return r, func() {}
}

// clientIP is the address the request came from. Behind a load balancer
// that is the balancer's: Clowder trusts no forwarding header.
func clientIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}
