package cas_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
)

// comeBack is an upstream refusal that names when to retry (a 429 with
// Retry-After).
type comeBack time.Duration

func (c comeBack) Error() string                     { return "429 Too Many Requests" }
func (c comeBack) RetryDelay() (time.Duration, bool) { return time.Duration(c), true }
func (c comeBack) Temporary() bool                   { return true }

// A fill told to come back soon waits and retries before its first byte
// (a site Clowder's fill cap seen from a worker Clowder); told to come back
// later than MaxRetryAfter, it reports the refusal at once.
func TestFillWaitsForRetryAfter(t *testing.T) {
	const data = "rate limited, then served"
	d := digest.FromString(data)
	desc := ocispec.Descriptor{Digest: d, Size: int64(len(data))}
	run := func(t *testing.T, refusals int, after time.Duration) (time.Duration, int32, error) {
		l, err := cas.OpenLayout(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		f := cas.NewFiller(l)
		f.MaxRetryAfter = 300 * time.Millisecond
		var calls atomic.Int32
		fetch := func(ctx context.Context, off int64) (io.ReadCloser, int64, int64, error) {
			if int(calls.Add(1)) <= refusals {
				return nil, 0, 0, comeBack(after)
			}
			return io.NopCloser(strings.NewReader(data[off:])), off, int64(len(data)), nil
		}
		start := time.Now()
		_, err = f.Start(desc, fetch).Wait(context.Background())
		return time.Since(start), calls.Load(), err
	}
	t.Run("soon", func(t *testing.T) {
		took, calls, err := run(t, 2, 150*time.Millisecond)
		if err != nil || calls != 3 {
			t.Fatalf("fill = %v after %d fetches, want success on the 3rd", err, calls)
		}
		if took < 300*time.Millisecond {
			t.Errorf("fill took %v, want at least the two 150 ms waits asked for", took)
		}
	})
	t.Run("too late", func(t *testing.T) {
		took, calls, err := run(t, 1, time.Hour)
		var cb comeBack
		if !errors.As(err, &cb) || calls != 1 || took > 5*time.Second {
			t.Fatalf("fill = %v after %d fetches in %v, want the refusal at once", err, calls, took)
		}
	})
	t.Run("never", func(t *testing.T) {
		_, calls, err := run(t, 100, 10*time.Millisecond)
		var cb comeBack
		if !errors.As(err, &cb) || calls != 4 {
			t.Fatalf("fill = %v after %d fetches, want the refusal after Attempts (4)", err, calls)
		}
	})
}
