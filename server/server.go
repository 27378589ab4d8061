package server

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/clowder-dev/clowder/cas/s3store"
	"github.com/clowder-dev/clowder/hosted"
	"github.com/clowder-dev/clowder/metrics"
	"github.com/clowder-dev/clowder/proxy"
)

// Server is Clowder's HTTP front: the OCI distribution API over the proxy.
type Server struct {
	proxy *proxy.Proxy
	log   zerolog.Logger
	mux   chi.Router
	opts  Options
}

// Options are per listener.
type Options struct {
	// DefaultUpstream names this listener's upstream for names without a
	// known prefix (before the User-Agent rule and the global default).
	DefaultUpstream string
	// PublicURL is the base URL clients reach Clowder at (behind a load
	// balancer or TLS); pagination links are built on it. Default: the
	// request's Host.
	PublicURL string
	// Hosted, when set, serves the hosted repositories (push, delete,
	// catalog) under its prefix.
	Hosted *hosted.Store
	// Auth, when set, authenticates clients and applies access rules.
	Auth *Auth
	// Metrics, when set, counts requests and serves /metrics.
	Metrics *metrics.Metrics
	// Ready reports whether the process can serve (/readyz); nil is ready.
	Ready func() error
	// FleetKey, when set, serves this replica's fills to the other
	// replicas of a shared s3 store (s3store.FleetPath).
	FleetKey []byte
	// TrustedProxies are the peers (load balancers) whose X-Forwarded-For
	// names the client, for the per-client fill cap and the access log.
	TrustedProxies []netip.Prefix
	// BodyIdleTimeout fails a request whose body sends nothing for this
	// long (a trickled upload). Default DefaultBodyIdleTimeout; <0 is off.
	BodyIdleTimeout time.Duration
}

// New returns a Server for one listener.
func New(p *proxy.Proxy, log zerolog.Logger, opts ...Options) *Server {
	s := &Server{proxy: p, log: log}
	if len(opts) > 0 {
		s.opts = opts[0]
	}
	r := chi.NewRouter()
	r.Use(s.accessLog)
	r.Use(s.bodyIdle)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Get("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if s.opts.Ready != nil {
			if err := s.opts.Ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if s.opts.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", s.opts.Metrics.Handler())
	}
	r.Get("/token", s.handleToken)
	r.Get(s3store.FleetPath+"*", s.handleFleet)
	r.Get("/v2", s.handleBase)
	r.Get("/v2/", s.handleBase)
	r.Head("/v2/", s.handleBase)
	r.Get("/v2/_catalog", s.handleCatalog)
	r.HandleFunc("/v2/*", s.handleOCI)
	r.HandleFunc("/api/*", s.handleHFAPI)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		if s.handleHFResolve(w, r) {
			return
		}
		writeError(w, r, errorf(http.StatusNotFound, CodeUnsupported, "no such endpoint: "+r.URL.Path))
	})
	s.mux = r
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// HTTPServer returns an http.Server for s with Clowder's limits.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

func (s *Server) handleBase(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if a := s.opts.Auth; a != nil {
		id, err := a.identify(r)
		if err != nil || (id.Anonymous && !a.cfg.Anonymous) {
			s.challenge(w, r, "", errorf(http.StatusUnauthorized, CodeUnauthorized, "authentication required"))
			return
		}
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("{}"))
	}
}

// routeOf names a request's route for metrics (a small fixed set).
func routeOf(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		return "base"
	case strings.HasPrefix(p, "/v2/"):
		if strings.Contains(p, "/blobs/uploads") {
			return "uploads"
		}
		if _, kind, _, ok := ociPath(p); ok {
			return kind
		}
		return "v2_other"
	case strings.HasPrefix(p, "/api/"):
		return "hf_api"
	case strings.Contains(p, "/resolve/"):
		return "hf_resolve"
	case p == "/metrics" || p == "/healthz" || p == "/readyz":
		return "ops"
	}
	return "other"
}

// reqInfo is what handlers tell the access log.
type reqInfo struct {
	cache    string // hit, miss, stale
	upstream string
	name     string
	err      *Error
	identity *Identity
}

type infoKey struct{}

func info(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

func setErr(r *http.Request, e *Error) { info(r).err = e }

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom keeps net/http's sendfile path reachable through the wrapper.
func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := io.Copy(w.ResponseWriter, src)
	w.bytes += n
	return n, err
}

// accessLog writes one zerolog line per request.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{}
		ctx := context.WithValue(r.Context(), infoKey{}, ri)
		ctx = s.log.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			rec := recover()
			status := sw.status
			if rec != nil {
				status = -1 // aborted
			}
			ev := s.log.Info()
			if status >= 500 || status < 0 {
				ev = s.log.Warn()
			}
			ev = ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).
				Int64("bytes", sw.bytes).Dur("duration", time.Since(start)).Str("remote", r.RemoteAddr)
			if len(s.opts.TrustedProxies) > 0 && r.Header.Get("X-Forwarded-For") != "" {
				ev = ev.Str("client", s.clientIP(r))
			}
			if q := r.URL.RawQuery; q != "" {
				if strings.Contains(q, "clowder-sig=") {
					q = "(presigned; redacted)" // the signature is a credential
				}
				ev = ev.Str("query", q)
			}
			if ri.cache != "" {
				ev = ev.Str("cache", ri.cache)
			}
			if ri.upstream != "" {
				ev = ev.Str("upstream", ri.upstream)
			}
			if ri.err != nil {
				ev = ev.Str("error", ri.err.Message)
			}
			if ua := r.UserAgent(); ua != "" {
				ev = ev.Str("ua", ua)
			}
			ev.Msg("request")
			if s.opts.Metrics != nil {
				s.opts.Metrics.ObserveRequest(routeOf(r), r.Method, status, time.Since(start), ri.cache)
			}
			if rec != nil {
				panic(rec)
			}
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}
