package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/cas/s3store"
	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/hosted"
	"github.com/clowder-dev/clowder/metrics"
	"github.com/clowder-dev/clowder/proxy"
	"github.com/clowder-dev/clowder/upstream"
	"github.com/clowder-dev/clowder/upstream/huggingface"
	"github.com/clowder-dev/clowder/upstream/oci"
	"github.com/clowder-dev/clowder/upstream/ollama"
)

// app is everything a subcommand needs, wired from the config.
type app struct {
	cfg     *config.Config
	log     zerolog.Logger
	store   cas.Store   // the cache: the local layout, or the shared s3 store
	local   *cas.Layout // the layout under root (for s3: the working area and read copies)
	s3      *s3store.Store
	filler  *cas.Filler
	router  *upstream.Router
	proxy   *proxy.Proxy
	hosted  *hosted.Store
	metrics *metrics.Metrics
}

func newLogger(level string, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// credentials returns an upstream's credentials: the config's, else those
// for the URL's host in ~/.docker/config.json (Docker Hub's are stored under
// https://index.docker.io/v1/; only an upstream whose URL is Docker Hub's
// gets them, not one merely named docker.io, such as a worker's upstream
// pointing at a site Clowder).
func credentials(u config.Upstream) oci.Credentials {
	return func(host string) (string, string, bool) {
		if u.Username != "" {
			return u.Username, u.Password, true
		}
		h := host
		if upstream.IsDockerHubURL(u) {
			h = name.DefaultRegistry
		}
		reg, err := name.NewRegistry(h, name.WeakValidation)
		if err != nil {
			return "", "", false
		}
		a, err := authn.DefaultKeychain.Resolve(reg)
		if err != nil || a == authn.Anonymous {
			return "", "", false
		}
		cfg, err := a.Authorization()
		if err != nil || cfg.Username == "" {
			return "", "", false
		}
		return cfg.Username, cfg.Password, true
	}
}

// newApp wires an app that may write the cache (serve, pull, import): an s3
// bucket is created when missing.
func newApp(cfg *config.Config, logOut io.Writer) (*app, error) {
	return wireApp(cfg, logOut, true)
}

func wireApp(cfg *config.Config, logOut io.Writer, create bool) (*app, error) {
	log := newLogger(cfg.LogLevel, logOut)
	st, err := openStore(cfg, create)
	if err != nil {
		return nil, err
	}
	store, local := st.store, st.local
	filler := cas.NewFiller(store)
	filler.Idle = time.Duration(cfg.FillIdleTimeout)
	m := metrics.New(filler.InFlight)
	if st.s3 != nil {
		filler.Coordinator = st.s3
		m.GaugeFunc("clowder_local_cache_bytes", "Bytes of local blob copies an s3 replica keeps (bounded by local_cache_size).", func() float64 { return float64(st.s3.LocalCacheBytes()) })
		m.GaugeFunc("clowder_uploads_deferred", "Committed blobs waiting for the bucket to take their upload.", func() float64 { return float64(st.s3.Unuploaded()) })
		st.s3.OnEvent(func(ev s3store.Event) {
			l := log.Info()
			switch ev.Kind {
			case "lease", "follow", "takeover", "alone", "unreachable":
				m.Fleet.WithLabelValues(ev.Kind).Inc()
				if ev.Kind == "alone" || ev.Kind == "unreachable" {
					l = log.Warn()
				}
			case "upload-deferred":
				l = log.Warn()
			case "damaged":
				l = log.Error()
			}
			l.Str("digest", ev.Digest.String()).Str("peer", ev.Peer).AnErr("cause", ev.Err).Msg(fleetMessage(ev.Kind))
		})
	}
	filler.OnEvent = func(ev cas.FillEvent) {
		if ev.Kind != "start" {
			m.Fills.WithLabelValues(ev.Kind).Inc()
		}
		switch ev.Kind {
		case "start":
			log.Debug().Str("digest", ev.Digest.String()).Msg("fill started")
		case "retry":
			log.Warn().Str("digest", ev.Digest.String()).Int64("offset", ev.Offset).AnErr("cause", ev.Err).Msg("fill resuming")
		case "done":
			log.Info().Str("digest", ev.Digest.String()).Int64("bytes", ev.Offset).Dur("duration", ev.Elapsed).Msg("fill committed")
		case "failed":
			log.Warn().Str("digest", ev.Digest.String()).Int64("offset", ev.Offset).AnErr("cause", ev.Err).Msg("fill failed")
		}
	}
	// Every upstream connection goes through the SSRF guard: redirects and
	// token realms reach private addresses only on an upstream's own host
	// or where allow_private_hosts says so.
	guard, err := upstream.NewGuard(cfg.UpstreamURLs(), cfg.AllowPrivateHosts)
	if err != nil {
		return nil, err
	}
	shared := guard.Transport(upstream.NewTransport())
	transport := shared
	var ups []*upstream.Upstream
	for _, u := range cfg.Upstreams {
		up := &upstream.Upstream{Upstream: u}
		transport := m.Transport(shared, u.Name)
		switch u.Type {
		case config.TypeOCI:
			c, err := oci.New(u.URL, oci.Options{Name: u.Name, Transport: transport, Credentials: credentials(u), UserAgent: "clowder/" + version})
			if err != nil {
				return nil, fmt.Errorf("upstream %s: %w", u.Name, err)
			}
			up.Source = c
		case config.TypeOllama:
			c, err := ollama.New(u.URL, oci.Options{Name: u.Name, Transport: transport, Credentials: credentials(u), UserAgent: "clowder/" + version})
			if err != nil {
				return nil, fmt.Errorf("upstream %s: %w", u.Name, err)
			}
			up.Source = c
		}
		ups = append(ups, up)
	}
	router := upstream.NewRouter(ups)
	router.SetOllama(cfg.OllamaUpstreamName())
	p := proxy.New(store, filler, router, proxy.Options{
		RevalidateTimeout: time.Duration(cfg.RevalidateTimeout),
		UpstreamTimeout:   time.Duration(cfg.UpstreamTimeout),
		MarkPrivate:       cfg.Auth.Enabled(),
		MaxFillsPerClient: cfg.FillsPerClient(),
		RequestTimeout:    cfg.WholeRequestTimeout(),
	})
	for _, up := range ups {
		if up.Type != config.TypeHuggingFace {
			continue
		}
		token := up.Token
		if token == "" {
			token = os.Getenv("HF_TOKEN")
		}
		c, err := huggingface.New(up.URL, token, m.Transport(transport, up.Name), "clowder/"+version)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", up.Name, err)
		}
		h := proxy.NewHF(p, up, c)
		up.Source = h.Source()
		p.SetHF(h)
	}
	var hs *hosted.Store
	if st.s3 == nil {
		// Hosted repositories keep their blob links under root, which
		// replicas do not share: they are served by the local backend only.
		hs, err = hosted.Open(store, local.Root(), cfg.HostedPrefix)
		if err != nil {
			return nil, err
		}
		hs.MaxUploadSize = int64(cfg.MaxUploadSize)
	}
	return &app{cfg: cfg, log: log, store: store, local: local, s3: st.s3, filler: filler, router: router, proxy: p, hosted: hs, metrics: m}, nil
}

type openedStore struct {
	store cas.Store
	local *cas.Layout
	s3    *s3store.Store
}

// openStore opens the configured backend: the layout under root, or the
// shared bucket with root as the working area.
func openStore(cfg *config.Config, create bool) (openedStore, error) {
	if cfg.Storage.Type != config.StorageS3 {
		l, err := cas.OpenLayout(cfg.Root)
		return openedStore{store: l, local: l}, err
	}
	o := cfg.Storage.S3
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := s3store.New(ctx, s3store.Options{
		Endpoint: o.Endpoint, Bucket: o.Bucket, Region: o.Region, Prefix: o.Prefix,
		AccessKey: o.AccessKey, SecretKey: o.SecretKey,
		Root:           cfg.Root,
		NoCreate:       !create,
		LocalCacheSize: int64(cfg.LocalCacheSize),
		Advertise:      cfg.AdvertiseURL(),
		LeaseTTL:       cfg.Storage.Lease(),
		FleetKey:       s3store.FleetKey(o.SecretKey),
	})
	if err != nil {
		return openedStore{}, fmt.Errorf("storage.s3: %w", err)
	}
	return openedStore{store: s, local: s.Local(), s3: s}, nil
}

// blobPath is the local file of a blob (for s3: a verified local copy made
// on demand).
func (a *app) blobPath(d digest.Digest) (string, error) {
	if a.s3 != nil {
		return a.s3.BlobPath(d)
	}
	return a.local.BlobPath(d)
}

// gc collects the store (both backends are cas.Collectable).
func (a *app) gc(ctx context.Context, opts cas.GCOptions) (cas.GCResult, error) {
	return cas.Collect(ctx, a.store.(cas.Collectable), opts)
}

// annotate sets annotations on names in one update.
func (a *app) annotate(ctx context.Context, set map[string]map[string]string) error {
	return cas.Annotate(ctx, a.store.(cas.Updater), set)
}

// fleetMessage is the log message of an s3store event.
func fleetMessage(kind string) string {
	switch kind {
	case "upload-deferred":
		return "upload to the bucket failed; kept locally, retrying"
	case "uploaded":
		return "deferred upload done"
	case "damaged":
		return "blob damaged in the bucket (its bytes do not match its digest); removed, the next request fills it again"
	case "unreachable":
		return "fleet holder unreachable; waiting for its lease to end or the blob to land, then fetching alone"
	}
	return "fleet " + kind
}
