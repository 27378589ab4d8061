package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/clowder-dev/clowder/cas/s3store"
	"github.com/clowder-dev/clowder/config"
	"github.com/clowder-dev/clowder/server"
)

func newServeCmd(g *globalFlags) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the caching proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Listen = listen
				if err := cfg.Validate(); err != nil {
					return err
				}
			}
			a, err := newApp(cfg, os.Stderr)
			if err != nil {
				return err
			}
			auth, err := newAuth(cfg)
			if err != nil {
				return err
			}
			type listener struct {
				srv       *http.Server
				ln        net.Listener
				cert, key string
			}
			var fleetKey []byte
			if a.s3 != nil {
				fleetKey = s3store.FleetKey(cfg.Storage.S3.SecretKey)
			}
			var lns []listener
			addrs := []config.Listener{{Listen: cfg.Listen, TLSCert: cfg.TLSCert, TLSKey: cfg.TLSKey}}
			addrs = append(addrs, cfg.Listeners...)
			for _, l := range addrs {
				srv := server.New(a.proxy, a.log, server.Options{DefaultUpstream: l.DefaultUpstream, PublicURL: cfg.PublicURL, Hosted: a.hosted, Auth: auth,
					Metrics: a.metrics, FleetKey: fleetKey, TrustedProxies: cfg.TrustedProxyPrefixes(),
					BodyIdleTimeout: time.Duration(cfg.BodyIdleTimeout), Ready: func() error { _, err := a.store.List(context.Background()); return err }}).HTTPServer(l.Listen)
				ln, err := net.Listen("tcp", l.Listen)
				if err != nil {
					for _, x := range lns {
						x.ln.Close()
					}
					return err
				}
				lns = append(lns, listener{srv, ln, l.TLSCert, l.TLSKey})
				a.log.Info().Str("listen", ln.Addr().String()).Str("default_upstream", l.DefaultUpstream).Bool("tls", l.TLSCert != "").Bool("auth", auth != nil).Msg("listening")
			}
			if a.s3 != nil {
				adv := cfg.AdvertiseURL()
				if _, port, _ := net.SplitHostPort(cfg.Listen); port == "0" && cfg.Advertise == "" {
					// Bound to a free port: other replicas reach that one.
					scheme := "http"
					if cfg.TLSCert != "" {
						scheme = "https"
					}
					adv = scheme + "://" + lns[0].ln.Addr().String()
					a.s3.SetAdvertise(adv)
				}
				a.log.Info().Str("bucket", cfg.Storage.S3.Bucket).Str("endpoint", cfg.Storage.S3.Endpoint).Str("advertise", adv).
					Int64("local_cache_size", int64(cfg.LocalCacheSize)).Msg("storage s3")
			}
			a.log.Info().Str("root", a.local.Root()).Int("upstreams", len(cfg.Upstreams)).Str("version", version).Msg("clowder serving")
			go func() {
				// What the store holds and what content addressing saves:
				// logged once, kept current in the /metrics gauges.
				for first := true; ; first = false {
					if u, err := a.metrics.RefreshStore(context.Background(), a.store); err == nil && first {
						a.log.Info().Int("names", len(u.Names)).Int("blobs", u.Blobs).Int64("referenced_bytes", u.Referenced).
							Int64("disk_bytes", u.Disk).Int64("dedup_saved_bytes", u.Saved).Msg("store")
					}
					time.Sleep(time.Minute)
				}
			}()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			jctx, jstop := context.WithCancel(context.Background())
			jdone := make(chan struct{})
			go func() { janitor(jctx, a); close(jdone) }()
			defer func() { jstop(); <-jdone }()
			errc := make(chan error, len(lns))
			for _, l := range lns {
				go func() {
					if l.cert != "" {
						errc <- l.srv.ServeTLS(l.ln, l.cert, l.key)
						return
					}
					errc <- l.srv.Serve(l.ln)
				}()
			}
			var serveErr error
			select {
			case serveErr = <-errc:
			case <-ctx.Done():
			}
			a.log.Info().Msg("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, l := range lns {
				if err := l.srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) && serveErr == nil {
					serveErr = err
				}
			}
			if errors.Is(serveErr, http.ErrServerClosed) {
				serveErr = nil
			}
			return serveErr
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on (host:port); overrides the config's listen")
	return cmd
}
