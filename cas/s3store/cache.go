package s3store

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/clowder-dev/clowder/cas"
)

// localCache bounds the local copies of blobs a replica keeps under its
// root: least recently used copies are removed past the limit. With limit 0
// no copy is kept once a blob is in the bucket.
type localCache struct {
	local *cas.Layout
	limit int64

	mu      sync.Mutex
	entries map[digest.Digest]*cacheEntry
	total   int64
	warming map[digest.Digest]bool
}

type cacheEntry struct {
	size int64
	used time.Time
}

func newLocalCache(local *cas.Layout, limit int64) *localCache {
	c := &localCache{local: local, limit: limit, entries: map[digest.Digest]*cacheEntry{}, warming: map[digest.Digest]bool{}}
	if limit > 0 {
		// Copies kept by an earlier run count, last used when written.
		_ = local.Blobs(context.Background(), func(b cas.BlobInfo) error {
			if c.kept(b.Digest) {
				return nil
			}
			c.entries[b.Digest] = &cacheEntry{size: b.Size, used: b.ModTime}
			c.total += b.Size
			return nil
		})
		c.mu.Lock()
		c.evictLocked("")
		c.mu.Unlock()
	}
	return c
}

// Bytes returns the bytes of local copies held.
func (c *localCache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// touch records a read of a local copy.
func (c *localCache) touch(d digest.Digest) {
	c.mu.Lock()
	if e := c.entries[d]; e != nil {
		e.used = time.Now()
	}
	c.mu.Unlock()
}

// keptPath is the marker of a local copy that clowder path or checkout
// handed out (a path a user or a link relies on): the cache neither counts
// nor evicts it. A marker is a file, so processes on one root see it.
func (c *localCache) keptPath(d digest.Digest) string {
	return filepath.Join(c.local.Root(), ".clowder", "kept", d.Algorithm().String(), d.Encoded())
}

func (c *localCache) kept(d digest.Digest) bool {
	_, err := os.Stat(c.keptPath(d))
	return err == nil
}

// keep marks the local copy of d as handed out.
func (c *localCache) keep(d digest.Digest) error {
	p := c.keptPath(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		return err
	}
	c.mu.Lock()
	if e := c.entries[d]; e != nil {
		c.total -= e.size
		delete(c.entries, d)
	}
	c.mu.Unlock()
	return nil
}

// unkeep drops the marker (the blob left the store).
func (c *localCache) unkeep(d digest.Digest) { _ = os.Remove(c.keptPath(d)) }

// added records a new local copy and evicts past the limit.
func (c *localCache) added(d digest.Digest, size int64) {
	if c.kept(d) {
		return
	}
	if c.limit <= 0 {
		// Keep none: readers that have the file open keep reading it.
		_ = c.local.Delete(context.Background(), d)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[d]; e != nil {
		e.used = time.Now()
		return
	}
	c.entries[d] = &cacheEntry{size: size, used: time.Now()}
	c.total += size
	c.evictLocked(d)
}

// removed forgets a copy that was deleted.
func (c *localCache) removed(d digest.Digest) {
	c.mu.Lock()
	if e := c.entries[d]; e != nil {
		c.total -= e.size
		delete(c.entries, d)
	}
	c.mu.Unlock()
}

// evictLocked removes least recently used copies until the total fits,
// keeping keep unless it alone is over the limit.
func (c *localCache) evictLocked(keep digest.Digest) {
	for c.total > c.limit {
		var victim digest.Digest
		var oldest time.Time
		for d, e := range c.entries {
			if d == keep && len(c.entries) > 1 {
				continue
			}
			if victim == "" || e.used.Before(oldest) {
				victim, oldest = d, e.used
			}
		}
		if victim == "" {
			return
		}
		if !c.kept(victim) { // handed out by another process meanwhile
			_ = c.local.Delete(context.Background(), victim)
		}
		c.total -= c.entries[victim].size
		delete(c.entries, victim)
	}
}

// warm makes a local copy of a blob read from the bucket, in the
// background, once per digest at a time.
func (c *localCache) warm(s *Store, d digest.Digest, size int64) {
	if c.limit <= 0 || size > c.limit {
		return
	}
	c.mu.Lock()
	if c.warming[d] {
		c.mu.Unlock()
		return
	}
	c.warming[d] = true
	c.mu.Unlock()
	go func() {
		defer func() {
			c.mu.Lock()
			delete(c.warming, d)
			c.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		if desc, err := s.download(ctx, d, size); err == nil {
			c.added(d, desc.Size)
		}
	}()
}
