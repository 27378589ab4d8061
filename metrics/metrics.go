// Package metrics holds Clowder's Prometheus metrics, served at /metrics.
package metrics

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clowder-dev/clowder/cas"
)

// Metrics is one process's set of collectors.
type Metrics struct {
	reg *prometheus.Registry

	Requests      *prometheus.CounterVec   // route, method, code
	Duration      *prometheus.HistogramVec // route
	Cache         *prometheus.CounterVec   // route, result (hit, miss, stale)
	UpstreamBytes *prometheus.CounterVec   // upstream
	UpstreamErrs  *prometheus.CounterVec   // upstream
	Fills         *prometheus.CounterVec   // result (done, failed, retry)
	Fleet         *prometheus.CounterVec   // kind (lease, follow, takeover, alone)

	storeBytes   prometheus.Gauge
	storeObjects prometheus.Gauge
	storeNames   prometheus.Gauge
	dedupSaved   prometheus.Gauge
}

// New registers Clowder's metrics; inFlight reports running fills.
func New(inFlight func() int) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.Requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clowder_requests_total", Help: "HTTP requests by route, method and status."}, []string{"route", "method", "code"})
	m.Duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "clowder_request_duration_seconds", Help: "HTTP request duration by route.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"route"})
	m.Cache = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clowder_cache_requests_total", Help: "Cache answers by route and result (hit, miss, stale)."}, []string{"route", "result"})
	m.UpstreamBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clowder_upstream_bytes_total", Help: "Response bytes read from each upstream."}, []string{"upstream"})
	m.UpstreamErrs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clowder_upstream_errors_total", Help: "Upstream requests that failed (transport errors and 5xx/429 answers)."}, []string{"upstream"})
	m.Fills = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clowder_fills_total", Help: "Blob fills by result (done, failed) and resumes (retry)."}, []string{"result"})
	m.Fleet = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clowder_fleet_fills_total", Help: "Fills coordinated with other replicas of a shared s3 store: lease (this replica fetches upstream), follow (streamed from the replica holding the lease), takeover (an expired lease taken over), alone (the live lease's holder stayed unreachable), unreachable (a live lease's holder did not answer: the wait began)."}, []string{"kind"})
	m.storeBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "clowder_store_bytes", Help: "Bytes held under blobs/ and referenced by names."})
	m.storeObjects = prometheus.NewGauge(prometheus.GaugeOpts{Name: "clowder_store_objects", Help: "Blobs referenced by names."})
	m.storeNames = prometheus.NewGauge(prometheus.GaugeOpts{Name: "clowder_store_names", Help: "Names in index.json."})
	m.dedupSaved = prometheus.NewGauge(prometheus.GaugeOpts{Name: "clowder_dedup_saved_bytes", Help: "Bytes that content addressing saves: referenced bytes minus bytes on disk."})
	m.reg.MustRegister(m.Requests, m.Duration, m.Cache, m.UpstreamBytes, m.UpstreamErrs, m.Fills, m.Fleet,
		m.storeBytes, m.storeObjects, m.storeNames, m.dedupSaved,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "clowder_fills_in_flight", Help: "Blob fills running now."}, func() float64 { return float64(inFlight()) }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// GaugeFunc registers a gauge read when scraped (backend-specific values).
func (m *Metrics) GaugeFunc(name, help string, fn func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveRequest records one HTTP request.
func (m *Metrics) ObserveRequest(route, method string, code int, d time.Duration, cache string) {
	m.Requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	m.Duration.WithLabelValues(route).Observe(d.Seconds())
	if cache != "" {
		m.Cache.WithLabelValues(route, cache).Inc()
	}
}

// RefreshStore recomputes the store gauges (a walk of every name).
func (m *Metrics) RefreshStore(ctx context.Context, s cas.Store) (cas.Usage, error) {
	u, err := cas.ComputeUsage(ctx, s)
	if err != nil {
		return u, err
	}
	m.storeBytes.Set(float64(u.Disk))
	m.storeObjects.Set(float64(u.Blobs))
	m.storeNames.Set(float64(len(u.Names)))
	m.dedupSaved.Set(float64(u.Saved))
	return u, nil
}

// Transport counts response bytes and failures of one upstream.
func (m *Metrics) Transport(next http.RoundTripper, upstream string) http.RoundTripper {
	return &countingTransport{next: next, bytes: m.UpstreamBytes.WithLabelValues(upstream), errs: m.UpstreamErrs.WithLabelValues(upstream)}
}

type countingTransport struct {
	next  http.RoundTripper
	bytes prometheus.Counter
	errs  prometheus.Counter
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		t.errs.Inc()
		return nil, err
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		t.errs.Inc()
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, c: t.bytes}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	c prometheus.Counter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.c.Add(float64(n))
	}
	return n, err
}
