package s3store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
)

// One upstream fetch per fleet. The replica that starts a fill creates a
// lease object in the bucket with a conditional create:
//
//	<prefix>.clowder/leases/<alg>/<hex>   {"owner": advertise URL, "instance", "expires"}
//
// and renews it (If-Match on its ETag) while the fill runs. A replica that
// finds a live lease streams the in-progress blob from the owner's
// FleetPath endpoint instead of going upstream; a lease whose owner stopped
// renewing expires, and the first replica to replace it (If-Match on the
// expired lease's ETag) resumes the fetch from the upstream where its own
// copy stands.

// FleetPath is where a replica serves the blobs it is filling to other
// replicas: GET FleetPath + digest, with Range: bytes=<off>-.
const FleetPath = "/_clowder/fleet/blobs/"

// FleetHeader carries FleetToken on requests between replicas.
const FleetHeader = "X-Clowder-Fleet"

// SizeHeader carries a fill's total size (-1 when not known yet) on FleetPath
// answers.
const SizeHeader = "X-Clowder-Size"

// FleetKey derives the key replicas sign their requests to each other with
// from the bucket credentials they all share.
func FleetKey(secretKey string) []byte { return SharedKey(secretKey, "clowder fleet v1") }

// SharedKey derives a key for one purpose from the bucket secret every
// replica of a store holds, so replicas agree on it without configuring
// it (fleet requests, issued tokens).
func SharedKey(secretKey, purpose string) []byte {
	m := hmac.New(sha256.New, []byte(secretKey))
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// FleetToken is the value of FleetHeader for a request for blob d.
func FleetToken(key []byte, d digest.Digest) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(d))
	return hex.EncodeToString(m.Sum(nil))
}

// CheckFleetToken reports whether tok is FleetToken(key, d).
func CheckFleetToken(key []byte, d digest.Digest, tok string) bool {
	if len(key) == 0 {
		return false
	}
	return hmac.Equal([]byte(tok), []byte(FleetToken(key, d)))
}

type lease struct {
	Owner    string    `json:"owner"`
	Instance string    `json:"instance"`
	Expires  time.Time `json:"expires"`
}

type fleet struct {
	s        *Store
	self     string
	instance string
	ttl      time.Duration
	key      []byte
	client   *http.Client
}

func newFleet(s *Store, o Options) *fleet {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	f := &fleet{s: s, self: o.Advertise, instance: hex.EncodeToString(b), ttl: o.LeaseTTL, key: o.FleetKey, client: o.PeerClient}
	if f.ttl <= 0 {
		f.ttl = 15 * time.Second
	}
	if f.client == nil {
		// Every step before the answer is bounded: a holder that is gone or
		// frozen (its kernel still accepting connections) must not keep a
		// follower from seeing its lease expire.
		f.client = &http.Client{Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: f.ttl}).DialContext,
			TLSHandshakeTimeout:   f.ttl,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   16,
		}}
	}
	return f
}

// SetAdvertise changes how other replicas reach this one (serve sets it
// once its listener is bound, when the config's listen port was 0). Call it
// before serving.
func (s *Store) SetAdvertise(u string) {
	if s.fleet != nil && u != "" {
		s.fleet.self = u
	}
}

func (f *fleet) event(kind string, d digest.Digest, peer string, err error) {
	f.s.event(Event{Kind: kind, Digest: d, Peer: peer, Err: err})
}

func leaseKey(d digest.Digest) string {
	return ".clowder/leases/" + d.Algorithm().String() + "/" + d.Encoded()
}

// readLease returns the lease of d and its ETag; found is false when there
// is none.
func (f *fleet) readLease(ctx context.Context, d digest.Digest) (l lease, etag string, found bool, err error) {
	if f.s.down() {
		return lease{}, "", false, errBucketDown
	}
	body, info, _, err := minio.Core{Client: f.s.c}.GetObject(ctx, f.s.bucket, f.s.key(leaseKey(d)), minio.GetObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return lease{}, "", false, nil
		}
		return lease{}, "", false, f.s.unavailable(err)
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, 4096))
	if err != nil {
		return lease{}, "", false, err
	}
	if json.Unmarshal(b, &l) != nil {
		// Unreadable: treat as expired so it is replaced.
		return lease{}, info.ETag, true, nil
	}
	return l, info.ETag, true, nil
}

// putLease writes our lease: created when etag is "" (If-None-Match: *),
// else replacing the lease with that ETag. ok is false when another replica
// won the race.
func (f *fleet) putLease(ctx context.Context, d digest.Digest, etag string) (newETag string, ok bool, err error) {
	if f.s.down() {
		return "", false, errBucketDown
	}
	b, _ := json.Marshal(lease{Owner: f.self, Instance: f.instance, Expires: time.Now().Add(f.ttl)})
	opts := minio.PutObjectOptions{ContentType: "application/json"}
	if etag == "" {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(etag)
	}
	info, err := f.s.c.PutObject(ctx, f.s.bucket, f.s.key(leaseKey(d)), bytes.NewReader(b), int64(len(b)), opts)
	if err != nil {
		if isPrecondition(err) || (etag != "" && isNotFound(err)) {
			return "", false, nil
		}
		return "", false, f.s.unavailable(err)
	}
	return info.ETag, true, nil
}

// Coordinate implements cas.Coordinator.
func (s *Store) Coordinate(desc ocispec.Descriptor, up cas.FetchFunc) (cas.FetchFunc, func()) {
	if s.fleet == nil {
		return up, func() {}
	}
	c := &coordinated{f: s.fleet, d: desc.Digest, up: up}
	return c.fetch, c.release
}

// coordinated is one fill's view of the fleet.
type coordinated struct {
	f  *fleet
	d  digest.Digest
	up cas.FetchFunc

	// alone: the lease holder stayed unreachable, this fill fetches
	// upstream without a lease (only touched by the fill's goroutine).
	alone bool

	mu    sync.Mutex
	owned bool
	etag  string
	stop  chan struct{}
	done  chan struct{}
}

// fetch returns the bytes of the blob from off: from the upstream while this
// replica holds the lease, else from the bucket once the blob is there, else
// from the replica holding a live lease; it takes the lease when there is
// none or it expired.
func (c *coordinated) fetch(ctx context.Context, off int64) (io.ReadCloser, int64, int64, error) {
	f := c.f
	poll := max(f.ttl/10, 50*time.Millisecond)
	// A live lease whose owner this replica cannot reach (a wrong
	// advertise, a firewall, an untrusted certificate) is waited on for
	// two lease lifetimes; then this replica fetches on its own: a second
	// upstream fetch beats a failed pull.
	var unreachableSince time.Time
	var peerErr error
	for {
		c.mu.Lock()
		owned := c.owned
		c.mu.Unlock()
		if owned || c.alone {
			return c.up(ctx, off)
		}
		if f.s.down() {
			// No lease can be read or taken: fetch alone at once.
			return c.up(ctx, off)
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, 0, err
		}
		// Committed meanwhile by another replica: read the bucket.
		if size, err := f.s.statBucket(ctx, c.d); err == nil {
			body, err := f.s.getRange(ctx, c.d, off, -1)
			if err == nil {
				return body, off, size, nil
			}
		}
		l, etag, found, err := f.readLease(ctx, c.d)
		if err != nil {
			// The bucket is unreachable: fetch alone rather than not at all.
			return c.up(ctx, off)
		}
		switch {
		case !found:
			if c.take(ctx, "", "lease", "") {
				continue
			}
		case l.Instance == f.instance || time.Now().After(l.Expires):
			kind := "takeover"
			if l.Instance == f.instance {
				kind = "lease"
			}
			if c.take(ctx, etag, kind, l.Owner) {
				continue
			}
		default:
			// A lease naming this replica's own URL under another instance
			// is a previous run's (restarted within lease_ttl) or a twin's
			// with the same advertise: asking ourselves would only wait on
			// this very fill. Treat it as unreachable.
			if l.Owner != f.self {
				body, start, total, err := f.peer(ctx, l.Owner, c.d, off)
				if err == nil {
					unreachableSince = time.Time{}
					f.event("follow", c.d, l.Owner, nil)
					return body, start, total, nil
				}
				peerErr = err
			} else {
				peerErr = errors.New("the lease names this replica's own advertise URL under another instance")
			}
			// The owner is gone or has no fill: wait for its lease to be
			// released or to expire, or for the blob to land.
			if unreachableSince.IsZero() {
				unreachableSince = time.Now()
				if l.Owner != f.self { // not this replica's own previous run
					f.event("unreachable", c.d, l.Owner, peerErr)
				}
			} else if time.Since(unreachableSince) > 2*f.ttl {
				c.alone = true
				f.event("alone", c.d, l.Owner, peerErr)
				return c.up(ctx, off)
			}
		}
		select {
		case <-ctx.Done():
			return nil, 0, 0, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// take tries to create (etag "") or replace the lease; on success this
// replica owns the fill and renews the lease until release.
func (c *coordinated) take(ctx context.Context, etag, kind, from string) bool {
	newETag, ok, err := c.f.putLease(ctx, c.d, etag)
	if err != nil || !ok {
		return false
	}
	c.mu.Lock()
	c.owned, c.etag = true, newETag
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	c.mu.Unlock()
	c.f.event(kind, c.d, from, nil)
	go c.renew()
	return true
}

// renew keeps the lease alive at a third of its lifetime.
func (c *coordinated) renew() {
	defer close(c.done)
	t := time.NewTicker(c.f.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		etag := c.etag
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.f.ttl/3)
		newETag, ok, err := c.f.putLease(ctx, c.d, etag)
		if err == nil && !ok {
			// A renewal the bucket applied but whose answer was lost (a
			// timeout) left us a stale ETag: the lease is still ours.
			if l, cur, found, rerr := c.f.readLease(ctx, c.d); rerr == nil && found && l.Instance == c.f.instance {
				newETag, ok = cur, true
			}
		}
		cancel()
		if err != nil {
			continue // try again next tick; the lease may still be ours
		}
		c.mu.Lock()
		if ok {
			c.etag = newETag
		} else {
			// Another replica took over (we were too slow): our fill
			// goes on, but the lease is not ours to renew or remove.
			c.etag = ""
		}
		c.mu.Unlock()
		if !ok {
			return
		}
	}
}

// release ends the fill's lease (the blob is committed and uploaded, or the
// fill failed).
func (c *coordinated) release() {
	c.mu.Lock()
	owned, stop, done := c.owned, c.stop, c.done
	c.mu.Unlock()
	if !owned {
		return
	}
	close(stop)
	<-done
	// Remove the lease if it is still ours (a renewal whose answer was
	// lost leaves c.etag stale; a replica that took over owns it now).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if l, _, found, err := c.f.readLease(ctx, c.d); err != nil || !found || l.Instance != c.f.instance {
		return
	}
	_ = c.f.s.c.RemoveObject(ctx, c.f.s.bucket, c.f.s.key(leaseKey(c.d)), minio.RemoveObjectOptions{})
}

// errPeer is a peer's refusal (no fill of the blob, or an error).
var errPeer = errors.New("replica has no fill of this blob")

// peer streams d from the replica at base, from off.
func (f *fleet) peer(ctx context.Context, base string, d digest.Digest, off int64) (io.ReadCloser, int64, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+FleetPath+d.String(), nil)
	if err != nil {
		return nil, 0, 0, err
	}
	req.Header.Set(FleetHeader, FleetToken(f.key, d))
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, 0, 0, err
	}
	start := int64(0)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusPartialContent:
		start = off
	default:
		resp.Body.Close()
		return nil, 0, 0, fmt.Errorf("%s: %s: %w", base, resp.Status, errPeer)
	}
	total, err := strconv.ParseInt(resp.Header.Get(SizeHeader), 10, 64)
	if err != nil {
		total = -1
	}
	return resp.Body, start, total, nil
}

// awaitOwnerUpload reports whether another replica holding a live lease on
// d uploaded it within the lease's lifetime (so this replica, which
// followed that fill, need not upload it again).
func (f *fleet) awaitOwnerUpload(ctx context.Context, d digest.Digest) bool {
	deadline := time.Now().Add(f.ttl)
	for time.Now().Before(deadline) {
		if _, err := f.s.statBucket(ctx, d); err == nil {
			return true
		}
		l, _, found, err := f.readLease(ctx, d)
		if err != nil || !found || l.Instance == f.instance || time.Now().After(l.Expires) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

// SweepLeases removes lease objects that expired more than olderThan ago:
// their owner died and no replica missed the blob since (a later miss
// would have taken them over). It returns how many it removed.
func (s *Store) SweepLeases(ctx context.Context, olderThan time.Duration) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cutoff := time.Now().Add(-olderThan)
	n := 0
	for obj := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.key(".clowder/leases/"), Recursive: true}) {
		if obj.Err != nil {
			return n, fmt.Errorf("s3 list leases: %w", obj.Err)
		}
		var l lease
		body, _, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, obj.Key, minio.GetObjectOptions{})
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(body, 4096))
		body.Close()
		expires := obj.LastModified // unreadable: judged by its age
		if json.Unmarshal(b, &l) == nil && !l.Expires.IsZero() {
			expires = l.Expires
		}
		if expires.After(cutoff) {
			continue
		}
		if err := s.c.RemoveObject(ctx, s.bucket, obj.Key, minio.RemoveObjectOptions{}); err == nil {
			n++
		}
	}
	return n, nil
}
