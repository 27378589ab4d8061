package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clowder-dev/clowder/internal/testutil"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue finds one sample of /metrics output.
func metricValue(text, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

func TestMetricsHealthAndAccessLog(t *testing.T) {
	blob := testutil.NewBlobServer(t, 100000)
	cfg := writeConfig(t, fmt.Sprintf("upstreams:\n  - {name: up, url: '%s'}\n", blob.URL))
	p := startServe(t, cfg, t.TempDir())
	base := "http://" + p.addr
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, base+path); code != 200 {
			t.Errorf("GET %s = %d %s", path, code, body)
		}
	}
	path := "/v2/up/m/blobs/" + blob.Digest.String()
	for i := range 2 { // miss, then hit
		if code, body := get(t, base+path); code != 200 || len(body) != len(blob.Data) {
			t.Fatalf("GET blob = %d (%d bytes)", code, len(body))
		}
		for i == 0 && len(blobFiles(p.root)) == 0 {
			time.Sleep(10 * time.Millisecond) // the commit follows the verified last byte
		}
	}
	// A client has every byte once the blob verifies; the fill's commit
	// (and its counter) follows a moment later.
	var code int
	var text string
	for deadline := time.Now().Add(3 * time.Second); ; {
		code, text = get(t, base+"/metrics")
		if v, _ := metricValue(text, `clowder_fills_total{result="done"}`); v >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, c := range []struct {
		series string
		min    float64
	}{
		{`clowder_requests_total{code="200",method="GET",route="blobs"}`, 2},
		{`clowder_cache_requests_total{result="miss",route="blobs"}`, 1},
		{`clowder_cache_requests_total{result="hit",route="blobs"}`, 1},
		{`clowder_upstream_bytes_total{upstream="up"}`, float64(len(blob.Data))},
		{`clowder_fills_total{result="done"}`, 1},
		{`clowder_fills_in_flight`, 0},
	} {
		v, ok := metricValue(text, c.series)
		if !ok || v < c.min {
			t.Errorf("%s = %v (found %v), want >= %v", c.series, v, ok, c.min)
		}
	}
	for _, name := range []string{"clowder_store_bytes", "clowder_store_objects", "clowder_dedup_saved_bytes", "clowder_request_duration_seconds_bucket"} {
		if !strings.Contains(text, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	// One access line per request, with cache state and upstream.
	time.Sleep(100 * time.Millisecond)
	var lines int
	for _, l := range strings.Split(p.log.String(), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(l), &e) != nil || e["message"] != "request" {
			continue
		}
		if e["path"] == path {
			lines++
			if e["upstream"] != "up" || (e["cache"] != "hit" && e["cache"] != "miss") || e["status"] != float64(200) {
				t.Errorf("access line %s", l)
			}
		}
	}
	if lines != 2 {
		t.Errorf("access lines for %s = %d, want 2\n%s", path, lines, p.log.String())
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
