package cas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FetchFunc opens the source of a blob's bytes starting at offset. It returns
// the body, the offset the body really starts at (0 when the source ignored
// the range) and the blob's total size (-1 when unknown).
type FetchFunc func(ctx context.Context, offset int64) (body io.ReadCloser, start, total int64, err error)

// ErrFillStalled is the error of an upstream read that got no byte for the
// idle timeout.
var ErrFillStalled = errors.New("upstream sent no data within the idle timeout")

// Filler runs at most one fill per digest: the first miss starts an upstream
// fetch into the store's ingest path, and every reader of that digest follows
// the bytes as they land. A fill runs detached from the request that started
// it; when every client has gone it still completes (the cache wants the
// bytes), bounded by the idle timeout and the retry budget.
type Filler struct {
	store BlobStore
	// Idle aborts and resumes an upstream read that sends nothing for this long.
	Idle time.Duration
	// Attempts bounds consecutive upstream attempts without progress.
	Attempts int
	// Backoff is the wait between attempts.
	Backoff time.Duration
	// MaxRetryAfter bounds how long a fill waits, before its first byte,
	// on an upstream that said when to come back (429 or 503 with
	// Retry-After: a site Clowder's per-client fill cap, a registry's
	// short rate limit), within Attempts. A longer wait is left to the
	// client: the upstream's answer is relayed at once.
	MaxRetryAfter time.Duration
	// OnEvent, when set, is told about fill starts, retries and ends (metrics, logs).
	OnEvent func(ev FillEvent)
	// Coordinator, when set, shares fills with other replicas of a shared
	// store, so the fleet fetches each blob from upstream once.
	Coordinator Coordinator

	mu    sync.Mutex
	fills map[digest.Digest]*Fill
}

// FillEvent describes a change in a fill's life.
type FillEvent struct {
	Digest  digest.Digest
	Kind    string // "start", "retry", "done", "failed"
	Offset  int64
	Err     error
	Elapsed time.Duration
}

// Coordinator shares fills among replicas of one shared store.
type Coordinator interface {
	// Coordinate wraps the upstream fetch of one fill: the wrapped fetch
	// decides, on each (re)start at an offset, where the bytes come from
	// (the upstream, the replica already fetching them, or the shared store
	// once committed). done is called when the fill has ended.
	Coordinate(desc ocispec.Descriptor, upstream FetchFunc) (fetch FetchFunc, done func())
}

// NewFiller returns a Filler writing into store.
func NewFiller(store BlobStore) *Filler {
	return &Filler{store: store, Idle: 30 * time.Second, Attempts: 4, Backoff: 200 * time.Millisecond, MaxRetryAfter: 30 * time.Second, fills: map[digest.Digest]*Fill{}}
}

// InFlight returns the number of fills running.
func (f *Filler) InFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.fills)
}

// Lookup returns the running fill of dgst, if any.
func (f *Filler) Lookup(dgst digest.Digest) *Fill {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fills[dgst]
}

// Start joins the running fill of desc.Digest or starts one with fetch.
// desc.Size is -1 when unknown. The caller must check the store first: Start
// always fetches when no fill runs.
func (f *Filler) Start(desc ocispec.Descriptor, fetch FetchFunc) *Fill {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.fills[desc.Digest]; ok {
		return fl
	}
	fl := &Fill{
		desc:   desc,
		size:   desc.Size,
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		notify: make(chan struct{}),
		refs:   1,
	}
	f.fills[desc.Digest] = fl
	go f.run(fl, fetch)
	return fl
}

func (f *Filler) event(ev FillEvent) {
	if f.OnEvent != nil {
		f.OnEvent(ev)
	}
}

func (f *Filler) run(fl *Fill, fetch FetchFunc) {
	began := time.Now()
	ctx := context.Background()
	f.event(FillEvent{Digest: fl.desc.Digest, Kind: "start"})
	if f.Coordinator != nil {
		var done func()
		fetch, done = f.Coordinator.Coordinate(fl.desc, fetch)
		defer done()
	}
	desc, err := f.fill(ctx, fl, fetch)
	f.mu.Lock()
	delete(f.fills, fl.desc.Digest)
	f.mu.Unlock()
	fl.finish(desc, err)
	if err != nil {
		f.event(FillEvent{Digest: fl.desc.Digest, Kind: "failed", Err: err, Offset: fl.Written(), Elapsed: time.Since(began)})
	} else {
		f.event(FillEvent{Digest: fl.desc.Digest, Kind: "done", Offset: desc.Size, Elapsed: time.Since(began)})
	}
}

func (f *Filler) fill(ctx context.Context, fl *Fill, fetch FetchFunc) (ocispec.Descriptor, error) {
	w, err := f.store.Writer(ctx, fl.desc)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer w.Abort()
	ra, err := w.OpenReader()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	fl.setReader(ra)

	buf := make([]byte, 1<<20)
	failures := 0
	var lastErr error
	var comeBack time.Duration // the upstream's Retry-After, when it gave one we wait for
	for {
		off := w.Offset()
		if fl.size >= 0 && off == fl.size && off > 0 {
			break
		}
		if failures >= f.Attempts {
			return ocispec.Descriptor{}, lastErr
		}
		if failures > 0 {
			f.event(FillEvent{Digest: fl.desc.Digest, Kind: "retry", Offset: off, Err: lastErr})
			wait := max(f.Backoff*time.Duration(failures), comeBack)
			comeBack = 0
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ocispec.Descriptor{}, lastErr
			}
		}
		body, start, total, err := fetch(ctx, off)
		if err != nil {
			if d, ok := retryAfter(err); ok && d <= f.MaxRetryAfter && failures+1 < f.Attempts {
				// Told when to come back, soon enough to wait for.
				failures++
				lastErr, comeBack = err, d
				continue
			}
			if off == 0 || !Retryable(err) {
				// Nothing yet, or the upstream said no: report its answer.
				return ocispec.Descriptor{}, err
			}
			failures++
			lastErr = err
			continue
		}
		if total >= 0 {
			if fl.size >= 0 && total != fl.size {
				body.Close()
				return ocispec.Descriptor{}, fmt.Errorf("blob %s: upstream size %d, want %d: %w", fl.desc.Digest, total, fl.size, ErrSizeMismatch)
			}
			fl.setSize(total)
		} else if off == 0 {
			fl.setSize(-1)
		}
		n, err := f.copyBody(fl, w, body, start, off, buf)
		body.Close()
		if err == nil {
			if fl.size < 0 || w.Offset() == fl.size {
				break
			}
			err = fmt.Errorf("upstream body ended at %d of %d bytes: %w", w.Offset(), fl.size, io.ErrUnexpectedEOF)
		}
		if errors.Is(err, ErrSizeMismatch) {
			return ocispec.Descriptor{}, err
		}
		if n > 0 {
			failures = 0
		}
		failures++
		lastErr = err
	}
	// Verified bytes may be released to readers before they are durable.
	if v, ok := w.(interface{ Verify() error }); ok {
		if err := v.Verify(); err != nil {
			return ocispec.Descriptor{}, err
		}
		fl.markVerified()
	}
	return w.Commit(ctx)
}

func (fl *Fill) markVerified() {
	fl.mu.Lock()
	fl.verified = true
	ch := fl.notify
	fl.notify = make(chan struct{})
	fl.mu.Unlock()
	close(ch)
}

// copyBody appends body (which starts at start) to w from offset off,
// discarding what w already has, resetting the idle timer on each read.
func (f *Filler) copyBody(fl *Fill, w Writer, body io.ReadCloser, start, off int64, buf []byte) (int64, error) {
	var stalled bool
	var mu sync.Mutex
	timer := time.AfterFunc(f.Idle, func() {
		mu.Lock()
		stalled = true
		mu.Unlock()
		body.Close()
	})
	defer timer.Stop()
	skip := off - start
	var n int64
	for {
		m, err := body.Read(buf)
		timer.Reset(f.Idle)
		p := buf[:m]
		if skip > 0 {
			d := min(int64(len(p)), skip)
			p = p[d:]
			skip -= d
		}
		if len(p) > 0 {
			if _, werr := w.Write(p); werr != nil {
				return n, werr
			}
			n += int64(len(p))
			fl.advance(w.Offset())
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			mu.Lock()
			s := stalled
			mu.Unlock()
			if s {
				return n, fmt.Errorf("blob %s at %d: %w", fl.desc.Digest, w.Offset(), ErrFillStalled)
			}
			return n, err
		}
	}
}

// retryAfter reports the wait an upstream error asks for (Retry-After on a
// 429 or 503), if it names one.
func retryAfter(err error) (time.Duration, bool) {
	var r interface{ RetryDelay() (time.Duration, bool) }
	if errors.As(err, &r) {
		return r.RetryDelay()
	}
	return 0, false
}

// Retryable reports whether an upstream error may go away on a new attempt.
// Errors that implement `Temporary() bool` decide for themselves; everything
// else (network resets, stalls) is retried.
func Retryable(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return true
}

// Fill is one blob being fetched into the store. Readers follow it.
type Fill struct {
	desc ocispec.Descriptor

	mu        sync.Mutex
	size      int64
	sizeKnown bool
	written   int64
	notify    chan struct{}
	ready     chan struct{}
	readyOnce sync.Once
	done      chan struct{}
	err       error
	result    ocispec.Descriptor
	ra        ReaderAtCloser
	refs      int
	began     time.Time // first byte on disk
	verified  bool      // size and digest checked (commit may still run)
}

// Digest returns the digest being filled.
func (fl *Fill) Digest() digest.Digest { return fl.desc.Digest }

func (fl *Fill) setReader(ra ReaderAtCloser) {
	fl.mu.Lock()
	fl.ra = ra
	fl.mu.Unlock()
}

func (fl *Fill) setSize(n int64) {
	fl.mu.Lock()
	fl.size = n
	fl.sizeKnown = true
	fl.mu.Unlock()
	fl.readyOnce.Do(func() { close(fl.ready) })
}

func (fl *Fill) advance(n int64) {
	fl.mu.Lock()
	if fl.began.IsZero() {
		fl.began = time.Now()
	}
	fl.written = n
	ch := fl.notify
	fl.notify = make(chan struct{})
	fl.mu.Unlock()
	close(ch)
}

func (fl *Fill) finish(desc ocispec.Descriptor, err error) {
	fl.mu.Lock()
	fl.err = err
	fl.result = desc
	if err == nil {
		fl.size = desc.Size
		fl.sizeKnown = true
		fl.written = desc.Size
	}
	ch := fl.notify
	fl.notify = make(chan struct{})
	fl.mu.Unlock()
	close(ch)
	fl.readyOnce.Do(func() { close(fl.ready) })
	close(fl.done)
	fl.release()
}

func (fl *Fill) release() {
	fl.mu.Lock()
	fl.refs--
	var ra ReaderAtCloser
	if fl.refs == 0 {
		ra, fl.ra = fl.ra, nil
	}
	fl.mu.Unlock()
	if ra != nil {
		ra.Close()
	}
}

// Ready waits until the blob's size is known (the upstream answered) or the
// fill failed. Size is -1 when the upstream did not say.
func (fl *Fill) Ready(ctx context.Context) (int64, error) {
	select {
	case <-fl.ready:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.err != nil && !fl.sizeKnown {
		return 0, fl.err
	}
	return fl.size, nil
}

// Wait waits for the fill to end and returns the committed descriptor.
func (fl *Fill) Wait(ctx context.Context) (ocispec.Descriptor, error) {
	select {
	case <-fl.done:
	case <-ctx.Done():
		return ocispec.Descriptor{}, ctx.Err()
	}
	return fl.result, fl.err
}

// Done is closed when the fill has ended.
func (fl *Fill) Done() <-chan struct{} { return fl.done }

// Written returns the number of bytes on disk so far.
func (fl *Fill) Written() int64 {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.written
}

// ETA estimates how long the fill needs to reach offset off, from its rate
// so far. ok is false while there is too little history to tell (under
// minHistory of transfer).
func (fl *Fill) ETA(off int64, minHistory time.Duration) (eta time.Duration, ok bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if off <= fl.written {
		return 0, true
	}
	if fl.began.IsZero() {
		return 0, false
	}
	elapsed := time.Since(fl.began)
	if elapsed < minHistory || fl.written == 0 {
		return 0, false
	}
	rate := float64(fl.written) / elapsed.Seconds()
	return time.Duration(float64(off-fl.written) / rate * float64(time.Second)), true
}

// NewReader returns a reader of [off, off+n) that follows the fill: it
// returns bytes as soon as they are on disk and blocks for the rest. n < 0
// reads to the end. If the fill fails the reader returns its error, so a
// client sees a broken transfer, never a clean short one.
func (fl *Fill) NewReader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	fl.mu.Lock()
	if fl.ra == nil {
		fl.mu.Unlock()
		// Not started writing yet (or all readers gone after the end):
		// wait for the writer or the result.
		select {
		case <-fl.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		fl.mu.Lock()
		if fl.ra == nil {
			err := fl.err
			fl.mu.Unlock()
			if err == nil {
				err = errFillGone
			}
			return nil, err
		}
	}
	fl.refs++
	fl.mu.Unlock()
	end := int64(-1)
	if n >= 0 {
		end = off + n
	}
	return &fillReader{fl: fl, ctx: ctx, pos: off, end: end}, nil
}

// errFillGone is returned when a fill ended before a reader could attach; the
// caller reads the committed blob from the store instead.
var errFillGone = errors.New("fill already ended")

// ErrFillGone reports whether err means the fill ended before the reader attached.
func ErrFillGone(err error) bool { return errors.Is(err, errFillGone) }

type fillReader struct {
	fl     *Fill
	ctx    context.Context
	pos    int64
	end    int64
	closed bool
}

// span waits until bytes at r.pos are on disk and returns how many can be
// read there (at most max); 0 with io.EOF at the end.
func (r *fillReader) span(max int64) (int64, ReaderAtCloser, error) {
	if r.end >= 0 && r.pos >= r.end {
		return 0, nil, io.EOF
	}
	for {
		fl := r.fl
		fl.mu.Lock()
		avail, err, ch, ra, size := fl.written, fl.err, fl.notify, fl.ra, fl.size
		ended := fl.result.Digest != "" || err != nil
		verified := fl.verified
		fl.mu.Unlock()
		if err != nil {
			return 0, nil, err
		}
		// A reader of the blob's end gets the last byte only once the blob
		// is verified: a client that trusts Content-Length must never see
		// a complete body of wrong bytes.
		if !ended && !verified && size > 0 && (r.end < 0 || r.end >= size) && avail >= size {
			avail = size - 1
		}
		if r.pos < avail {
			m := min(avail-r.pos, max)
			if r.end >= 0 {
				m = min(m, r.end-r.pos)
			}
			return m, ra, nil
		}
		if ended || (verified && r.pos >= size) {
			if r.end >= 0 && r.pos < r.end {
				return 0, nil, io.ErrUnexpectedEOF
			}
			return 0, nil, io.EOF
		}
		select {
		case <-ch:
		case <-r.ctx.Done():
			return 0, nil, r.ctx.Err()
		}
	}
}

func (r *fillReader) Read(p []byte) (int, error) {
	m, ra, err := r.span(int64(len(p)))
	if err != nil {
		return 0, err
	}
	k, rerr := ra.ReadAt(p[:m], r.pos)
	r.pos += int64(k)
	if rerr == io.EOF && k > 0 {
		rerr = nil
	}
	return k, rerr
}

// WriteTo sends the bytes as they land, each span with sendfile from a
// file description of its own (the ingest file, reopened through
// /proc/self/fd so its offset is this reader's), flushing after each span
// when w can. It falls back to Read where that is not possible.
func (r *fillReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	var own *os.File
	defer func() {
		if own != nil {
			own.Close()
		}
	}()
	flush, _ := w.(interface{ Flush() })
	buf := []byte(nil)
	for {
		m, ra, err := r.span(1 << 30)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if own == nil {
			if f, ok := ra.(*os.File); ok {
				own, _ = os.Open("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
			}
		}
		var k int64
		if own != nil {
			if _, err = own.Seek(r.pos, io.SeekStart); err == nil {
				k, err = io.CopyN(w, own, m)
			}
		} else {
			if buf == nil {
				buf = make([]byte, 1<<20)
			}
			var n int
			n, err = ra.ReadAt(buf[:min(m, int64(len(buf)))], r.pos)
			if n > 0 {
				n, err = w.Write(buf[:n])
			}
			k = int64(n)
		}
		r.pos += k
		total += k
		if flush != nil {
			flush.Flush()
		}
		if err != nil && err != io.EOF {
			return total, err
		}
	}
}

func (r *fillReader) Close() error {
	if !r.closed {
		r.closed = true
		r.fl.release()
	}
	return nil
}
