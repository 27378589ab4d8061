package cas

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Layout is the local Store: an OCI v1 image layout at a root directory.
type Layout struct {
	root string

	mu    sync.Mutex // guards the cached index below (within this process)
	cache *indexCache
}

var _ Store = (*Layout)(nil)

type indexCache struct {
	stamp fileStamp
	index ocispec.Index
	byRef map[string]int
}

type fileStamp struct {
	ino, size int64
	mtimeNs   int64
}

const (
	privateDir = ".clowder"
	ingestDir  = ".clowder/ingest"
	lockFile   = ".clowder/index.lock"
)

// OpenLayout opens (creating when needed) an OCI image layout at root. Stale
// ingest files that no live process holds are removed.
func OpenLayout(root string) (*Layout, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	l := &Layout{root: abs}
	for _, d := range []string{"blobs/sha256", "blobs/sha512", ingestDir} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("layout %s: %w", abs, err)
		}
	}
	if err := l.withLock(func() error {
		if _, err := os.Stat(filepath.Join(abs, ocispec.ImageLayoutFile)); errors.Is(err, fs.ErrNotExist) {
			b, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
			if err := writeFileAtomic(abs, ocispec.ImageLayoutFile, b); err != nil {
				return err
			}
		}
		if _, err := os.Stat(filepath.Join(abs, "index.json")); errors.Is(err, fs.ErrNotExist) {
			return l.writeIndex(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}})
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("layout %s: %w", abs, err)
	}
	l.cleanIngest()
	return l, nil
}

// Root returns the layout's directory.
func (l *Layout) Root() string { return l.root }

// BlobPath returns the path of a blob's file (whether or not it exists).
func (l *Layout) BlobPath(dgst digest.Digest) (string, error) {
	if err := ValidateDigest(dgst); err != nil {
		return "", err
	}
	return filepath.Join(l.root, "blobs", dgst.Algorithm().String(), dgst.Encoded()), nil
}

// Stat implements BlobStore.
func (l *Layout) Stat(_ context.Context, dgst digest.Digest) (int64, error) {
	p, err := l.BlobPath(dgst)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("blob %s: %w", dgst, ErrNotFound)
		}
		return 0, fmt.Errorf("blob %s: %w", dgst, err)
	}
	return fi.Size(), nil
}

// Open implements BlobStore. The returned Blob is an *os.File underneath
// (see File), so callers may use it for zero-copy serving.
func (l *Layout) Open(_ context.Context, dgst digest.Digest) (Blob, error) {
	p, err := l.BlobPath(dgst)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("blob %s: %w", dgst, ErrNotFound)
		}
		return nil, fmt.Errorf("blob %s: %w", dgst, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileBlob{File: f, size: fi.Size()}, nil
}

type fileBlob struct {
	*os.File
	size int64
}

func (b *fileBlob) Size() int64 { return b.size }

// OSFile exposes the file for sendfile.
func (b *fileBlob) OSFile() *os.File { return b.File }

// Delete implements BlobStore.
func (l *Layout) Delete(_ context.Context, dgst digest.Digest) error {
	p, err := l.BlobPath(dgst)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", dgst, err)
	}
	return nil
}

// Writer implements BlobStore: a temp file in the layout's own ingest folder,
// hashed while written, locked (flock) while its owner lives.
func (l *Layout) Writer(_ context.Context, expected ocispec.Descriptor) (Writer, error) {
	if err := ValidateDigest(expected.Digest); err != nil {
		return nil, err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	// The owner's pid is in the name: between creating the file and locking
	// it, another process opening the root must not take it for stale.
	name := expected.Digest.Encoded()[:16] + "-" + hex.EncodeToString(rnd[:]) + "-" + strconv.Itoa(os.Getpid())
	p := filepath.Join(l.root, ingestDir, name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("blob %s: ingest: %w", expected.Digest, err)
	}
	// Blocking: another process's cleanIngest may hold it for a moment while
	// it checks (and, seeing our live pid, leaves it alone).
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		os.Remove(p)
		return nil, fmt.Errorf("blob %s: ingest lock: %w", expected.Digest, err)
	}
	return &layoutWriter{l: l, f: f, path: p, expected: expected, h: expected.Digest.Algorithm().Hash()}, nil
}

type layoutWriter struct {
	l        *Layout
	f        *os.File
	path     string
	expected ocispec.Descriptor
	h        hash.Hash
	n        int64
	synced   int64
	done     bool
	mu       sync.Mutex
}

func (w *layoutWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return 0, errors.New("write after commit or abort")
	}
	if w.expected.Size >= 0 && w.n+int64(len(p)) > w.expected.Size {
		return 0, fmt.Errorf("blob %s: more than %d bytes: %w", w.expected.Digest, w.expected.Size, ErrSizeMismatch)
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	// Start writeback as we go, so the fsync at commit is short.
	if w.n-w.synced >= syncEvery {
		_ = unix.SyncFileRange(int(w.f.Fd()), w.synced, w.n-w.synced, unix.SYNC_FILE_RANGE_WRITE)
		w.synced = w.n
	}
	return n, err
}

// syncEvery is how often (bytes) an ingest starts writeback.
const syncEvery = 32 << 20

// Verify checks the size and digest of what was written so far, without
// persisting anything: the filler releases a blob's last byte to readers
// once it verifies, before the fsync and rename of Commit.
func (w *layoutWriter) Verify() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.expected.Size >= 0 && w.n != w.expected.Size {
		return fmt.Errorf("blob %s: got %d bytes, want %d: %w", w.expected.Digest, w.n, w.expected.Size, ErrSizeMismatch)
	}
	if got := digest.NewDigest(w.expected.Digest.Algorithm(), w.h); got != w.expected.Digest {
		return fmt.Errorf("blob %s: got %s: %w", w.expected.Digest, got, ErrDigestMismatch)
	}
	return nil
}

func (w *layoutWriter) Offset() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func (w *layoutWriter) OpenReader() (ReaderAtCloser, error) {
	return os.Open(w.path)
}

func (w *layoutWriter) Commit(_ context.Context) (ocispec.Descriptor, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return ocispec.Descriptor{}, errors.New("commit after commit or abort")
	}
	w.done = true
	fail := func(err error) (ocispec.Descriptor, error) {
		w.f.Close()
		os.Remove(w.path)
		return ocispec.Descriptor{}, fmt.Errorf("blob %s: %w", w.expected.Digest, err)
	}
	if w.expected.Size >= 0 && w.n != w.expected.Size {
		return fail(fmt.Errorf("got %d bytes, want %d: %w", w.n, w.expected.Size, ErrSizeMismatch))
	}
	got := digest.NewDigest(w.expected.Digest.Algorithm(), w.h)
	if got != w.expected.Digest {
		return fail(fmt.Errorf("got %s: %w", got, ErrDigestMismatch))
	}
	if err := w.f.Sync(); err != nil {
		return fail(err)
	}
	if err := w.f.Chmod(0o444); err != nil {
		return fail(err)
	}
	target, _ := w.l.BlobPath(w.expected.Digest)
	if err := os.Rename(w.path, target); err != nil {
		return fail(err)
	}
	w.f.Close()
	syncDir(filepath.Dir(target))
	desc := w.expected
	desc.Size = w.n
	return desc, nil
}

func (w *layoutWriter) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.path)
}

// ownerAlive reports whether the process named in an ingest file's name
// (...-<pid>) may still be about to lock it: the process exists and the file
// is less than a minute old (an old one belongs to a reused pid).
func ownerAlive(name string, mod time.Time) bool {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return false
	}
	pid, err := strconv.Atoi(name[i+1:])
	if err != nil || pid <= 0 {
		return false
	}
	if pid != os.Getpid() && syscall.Kill(pid, 0) != nil {
		return false
	}
	return time.Since(mod) < time.Minute
}

// cleanIngest removes ingest files whose owner is gone (no flock held, the
// process that named it is dead).
func (l *Layout) cleanIngest() {
	dir := filepath.Join(l.root, ingestDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		fi, err := f.Stat()
		if err == nil && syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil && !ownerAlive(e.Name(), fi.ModTime()) {
			os.Remove(p)
		}
		f.Close()
	}
}

// --- names: index.json ---

func (l *Layout) withLock(fn func() error) error {
	p := filepath.Join(l.root, lockFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = int64(s.Ino)
	}
	return st
}

// loadIndex returns the current index, re-reading index.json when another
// process (or this one) replaced it. Callers hold l.mu.
func (l *Layout) loadIndex() (*indexCache, error) {
	p := filepath.Join(l.root, "index.json")
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	st := stampOf(fi)
	if l.cache != nil && l.cache.stamp == st {
		return l.cache, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	c := &indexCache{stamp: st, index: idx, byRef: map[string]int{}}
	for i, d := range idx.Manifests {
		if n := d.Annotations[AnnotationRefName]; n != "" {
			c.byRef[n] = i
		}
	}
	l.cache = c
	return c, nil
}

func (l *Layout) writeIndex(idx ocispec.Index) error {
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(l.root, "index.json", append(b, '\n'))
}

// Resolve implements NameStore.
func (l *Layout) Resolve(_ context.Context, name string) (ocispec.Descriptor, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, err := l.loadIndex()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	i, ok := c.byRef[name]
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("name %s: %w", name, ErrNotFound)
	}
	return c.index.Manifests[i], nil
}

// List implements NameStore.
func (l *Layout) List(_ context.Context) ([]ocispec.Descriptor, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, err := l.loadIndex()
	if err != nil {
		return nil, err
	}
	out := append([]ocispec.Descriptor(nil), c.index.Manifests...)
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].Annotations[AnnotationRefName] < out[j].Annotations[AnnotationRefName]
	})
	return out, nil
}

// Update runs fn on the index under the cross-process lock and writes the
// result atomically when fn reports a change.
func (l *Layout) Update(fn func(idx *ocispec.Index) (changed bool, err error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.withLock(func() error {
		c, err := l.loadIndex()
		if err != nil {
			return err
		}
		idx := c.index
		idx.Manifests = append([]ocispec.Descriptor(nil), c.index.Manifests...)
		changed, err := fn(&idx)
		if err != nil || !changed {
			return err
		}
		return l.writeIndex(idx)
	})
}

// Tag implements NameStore. desc's annotations are kept; the name
// annotations are set from name.
func (l *Layout) Tag(_ context.Context, name string, desc ocispec.Descriptor) error {
	if name == "" {
		return fmt.Errorf("name %q: %w", name, ErrInvalidName)
	}
	if err := ValidateDigest(desc.Digest); err != nil {
		return err
	}
	ann := map[string]string{}
	for k, v := range desc.Annotations {
		ann[k] = v
	}
	ann[AnnotationRefName] = name
	ann[AnnotationContainerdRef] = name
	desc.Annotations = ann
	return l.Update(func(idx *ocispec.Index) (bool, error) {
		// Checked under the index lock, which gc holds to mark and sweep: a
		// blob committed for this name but swept before it (gc with no
		// grace) is refused here rather than named while missing.
		if _, err := l.Stat(context.Background(), desc.Digest); err != nil {
			return false, fmt.Errorf("name %s: %w", name, err)
		}
		for i, d := range idx.Manifests {
			if d.Annotations[AnnotationRefName] == name {
				if descEqual(d, desc) {
					return false, nil
				}
				idx.Manifests[i] = desc
				return true, nil
			}
		}
		idx.Manifests = append(idx.Manifests, desc)
		return true, nil
	})
}

// Untag implements NameStore.
func (l *Layout) Untag(_ context.Context, name string) error {
	found := false
	err := l.Update(func(idx *ocispec.Index) (bool, error) {
		out := idx.Manifests[:0]
		for _, d := range idx.Manifests {
			if d.Annotations[AnnotationRefName] == name {
				found = true
				continue
			}
			out = append(out, d)
		}
		idx.Manifests = out
		return found, nil
	})
	if err == nil && !found {
		return fmt.Errorf("name %s: %w", name, ErrNotFound)
	}
	return err
}

func descEqual(a, b ocispec.Descriptor) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// writeFileAtomic writes root/name via a temp file in the same directory,
// fsync and rename, then fsyncs the directory.
func writeFileAtomic(root, name string, b []byte) error {
	f, err := os.CreateTemp(filepath.Join(root, privateDir), name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(root, name)); err != nil {
		return err
	}
	syncDir(root)
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// ReadAll reads a whole committed blob, refusing blobs larger than limit.
func ReadAll(ctx context.Context, s BlobStore, dgst digest.Digest, limit int64) ([]byte, error) {
	b, err := s.Open(ctx, dgst)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if b.Size() > limit {
		return nil, fmt.Errorf("blob %s: %d bytes is over the %d limit", dgst, b.Size(), limit)
	}
	return io.ReadAll(io.LimitReader(b, limit+1))
}
