package s3store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/internal/testutil/s3test"
)

// newFleetStore opens a replica on clowder-test/<prefix> with fill leases
// (lease_ttl ttl).
func newFleetStore(t *testing.T, prefix string, ttl time.Duration) *Store {
	t.Helper()
	ep := s3test.Get(t)
	s, err := New(context.Background(), Options{
		Endpoint: ep.URL, Bucket: s3test.Bucket, Prefix: prefix, Region: "us-east-1",
		AccessKey: ep.AccessKey, SecretKey: ep.SecretKey,
		Root: t.TempDir(), Advertise: "http://127.0.0.1:1", LeaseTTL: ttl, FleetKey: FleetKey("k"),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// A renewal the bucket applied but whose answer never arrived (a timeout
// under load) leaves the owner with a stale ETag: the owner must keep its
// lease (not stop renewing, so no other replica takes over a live fill) and
// remove it when the fill ends (not leave it in the bucket).
func TestLeaseRenewAfterLostAnswer(t *testing.T) {
	ttl := 600 * time.Millisecond
	s := newFleetStore(t, fmt.Sprintf("lease-%d/", time.Now().UnixNano()), ttl)
	ctx := context.Background()
	d := digest.FromString("lease renew")
	up := func(context.Context, int64) (io.ReadCloser, int64, int64, error) {
		return io.NopCloser(strings.NewReader("lease renew")), 0, 11, nil
	}
	fetch, release := s.Coordinate(ocispec.Descriptor{Digest: d, Size: 11}, up)
	body, _, _, err := fetch(ctx, 0)
	if err != nil {
		t.Fatalf("fetch = %v", err)
	}
	body.Close()
	// The renewal that was applied without our hearing of it.
	_, etag, found, err := s.fleet.readLease(ctx, d)
	if err != nil || !found {
		t.Fatalf("readLease = found %v, %v; want our lease", found, err)
	}
	if _, ok, err := s.fleet.putLease(ctx, d, etag); !ok || err != nil {
		t.Fatalf("putLease = %v, %v", ok, err)
	}
	time.Sleep(2 * ttl)
	l, _, found, err := s.fleet.readLease(ctx, d)
	if err != nil || !found || l.Instance != s.fleet.instance || time.Now().After(l.Expires) {
		t.Errorf("lease 2 x lease_ttl later = %+v (found %v, %v), want ours and live", l, found, err)
	}
	release()
	if _, _, found, err := s.fleet.readLease(ctx, d); found || err != nil {
		t.Errorf("lease after release: found %v, %v; want removed", found, err)
	}
}

// A replica restarted while its previous run's lease is live finds a lease
// naming its own advertise URL under another instance: asking itself would
// wait on its own stalled fill (until the peer client's header timeout, 30
// s); it waits for the lease to expire and takes it over instead.
func TestLeaseOfPreviousRunIsNotFollowed(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select { // this replica's own fleet handler, waiting on this fill
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		http.Error(w, "no fill", http.StatusNotFound)
	}))
	defer srv.Close()
	ttl := time.Second
	s := newFleetStore(t, fmt.Sprintf("lease-%d/", time.Now().UnixNano()), ttl)
	s.SetAdvertise(srv.URL)
	ctx := context.Background()
	d := digest.FromString("previous run")
	prev, _ := json.Marshal(lease{Owner: srv.URL, Instance: "previous-run", Expires: time.Now().Add(ttl)})
	if _, err := s.c.PutObject(ctx, s.bucket, s.key(leaseKey(d)), bytes.NewReader(prev), int64(len(prev)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	var events []string
	s.OnEvent(func(ev Event) { events = append(events, ev.Kind) })
	up := func(context.Context, int64) (io.ReadCloser, int64, int64, error) {
		return io.NopCloser(strings.NewReader("previous run")), 0, 12, nil
	}
	fetch, release := s.Coordinate(ocispec.Descriptor{Digest: d, Size: 12}, up)
	defer release()
	began := time.Now()
	body, _, _, err := fetch(ctx, 0)
	if err != nil {
		t.Fatalf("fetch = %v", err)
	}
	body.Close()
	if took := time.Since(began); hits.Load() != 0 || took > 3*ttl {
		t.Errorf("fetch took %s with %d requests to its own advertise URL, want the takeover within ~lease_ttl (%s) and none", took, hits.Load(), ttl)
	}
	if len(events) != 1 || events[0] != "takeover" {
		t.Errorf("fleet events = %v, want [takeover]", events)
	}
}

// A lease holder that accepts connections but never answers (a frozen
// process: the kernel still completes the TCP handshake) must not hold a
// follower forever: on an https advertise URL the TLS handshake had no
// timeout, so the follower never saw the lease expire.
func TestFrozenHolderIsTakenOver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // never accepted: connections wait in the backlog
	ttl := time.Second
	s := newFleetStore(t, fmt.Sprintf("lease-%d/", time.Now().UnixNano()), ttl)
	ctx := context.Background()
	d := digest.FromString("frozen holder")
	frozen, _ := json.Marshal(lease{Owner: "https://" + ln.Addr().String(), Instance: "frozen", Expires: time.Now().Add(ttl)})
	if _, err := s.c.PutObject(ctx, s.bucket, s.key(leaseKey(d)), bytes.NewReader(frozen), int64(len(frozen)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	up := func(context.Context, int64) (io.ReadCloser, int64, int64, error) {
		return io.NopCloser(strings.NewReader("frozen holder")), 0, 13, nil
	}
	fetch, release := s.Coordinate(ocispec.Descriptor{Digest: d, Size: 13}, up)
	defer release()
	done := make(chan error, 1)
	go func() {
		body, _, _, err := fetch(ctx, 0)
		if err == nil {
			body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("fetch = %v, want the expired lease taken over", err)
		}
	case <-time.After(10 * ttl):
		t.Fatalf("fetch still waiting on a frozen lease holder %s after 10 x lease_ttl", 10*ttl)
	}
}

// gc removes leases that expired long ago (their owner died and nobody
// missed the blob since) and keeps live ones.
func TestSweepLeases(t *testing.T) {
	s := newFleetStore(t, fmt.Sprintf("sweep-%d/", time.Now().UnixNano()), time.Second)
	ctx := context.Background()
	put := func(d digest.Digest, expires time.Time) {
		b, _ := json.Marshal(lease{Owner: "http://127.0.0.1:1", Instance: "x", Expires: expires})
		if _, err := s.c.PutObject(ctx, s.bucket, s.key(leaseKey(d)), bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	stale, live := digest.FromString("stale"), digest.FromString("live")
	put(stale, time.Now().Add(-5*time.Minute))
	put(live, time.Now().Add(time.Minute))
	n, err := s.SweepLeases(ctx, time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("SweepLeases = %d, %v; want 1 removed", n, err)
	}
	if _, _, found, _ := s.fleet.readLease(ctx, stale); found {
		t.Errorf("the stale lease is still there")
	}
	if _, _, found, _ := s.fleet.readLease(ctx, live); !found {
		t.Errorf("the live lease was removed")
	}
}
