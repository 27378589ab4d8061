// Package casstest is the conformance suite every cas.Store implementation
// must pass: the verified ingest path, blob reads, and names.
package casstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
)

// Run runs the suite against stores made by newStore (a fresh, empty store
// per call).
func Run(t *testing.T, newStore func(t *testing.T) cas.Store) {
	ctx := context.Background()
	data := []byte("hello, clowder")
	d := digest.FromBytes(data)

	t.Run("IngestThenRead", func(t *testing.T) {
		s := newStore(t)
		desc, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Ingest = %v", err)
		}
		if desc.Digest != d || desc.Size != int64(len(data)) {
			t.Errorf("Ingest desc = %v", desc)
		}
		if n, err := s.Stat(ctx, d); err != nil || n != int64(len(data)) {
			t.Errorf("Stat = %d, %v; want %d", n, err, len(data))
		}
		b, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		got, _ := io.ReadAll(b)
		if !bytes.Equal(got, data) || b.Size() != int64(len(data)) {
			t.Errorf("Open = %q size %d", got, b.Size())
		}
		p := make([]byte, 5)
		if _, err := b.ReadAt(p, 7); err != nil || string(p) != "clowd" {
			t.Errorf("ReadAt(7) = %q, %v", p, err)
		}
	})

	t.Run("UnknownSize", func(t *testing.T) {
		s := newStore(t)
		if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: -1}, bytes.NewReader(data)); err != nil {
			t.Fatalf("Ingest(size -1) = %v", err)
		}
	})

	t.Run("EmptyBlob", func(t *testing.T) {
		s := newStore(t)
		e := digest.FromBytes(nil)
		if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: e, Size: 0}, bytes.NewReader(nil)); err != nil {
			t.Fatalf("Ingest(empty) = %v", err)
		}
		if n, err := s.Stat(ctx, e); err != nil || n != 0 {
			t.Errorf("Stat(empty) = %d, %v", n, err)
		}
	})

	t.Run("SHA512", func(t *testing.T) {
		s := newStore(t)
		d512 := digest.SHA512.FromBytes(data)
		if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d512, Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
			t.Fatalf("Ingest(sha512) = %v", err)
		}
		if _, err := s.Stat(ctx, d512); err != nil {
			t.Errorf("Stat(sha512) = %v", err)
		}
	})

	t.Run("DigestMismatchNeverVisible", func(t *testing.T) {
		s := newStore(t)
		_, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytes.NewReader([]byte("hello, clowdeR")))
		if !errors.Is(err, cas.ErrDigestMismatch) {
			t.Fatalf("Ingest(wrong bytes) = %v, want ErrDigestMismatch", err)
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, cas.ErrNotFound) {
			t.Errorf("Stat after mismatch = %v, want ErrNotFound", err)
		}
	})

	t.Run("SizeMismatch", func(t *testing.T) {
		s := newStore(t)
		for _, size := range []int64{int64(len(data)) - 1, int64(len(data)) + 1} {
			_, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: size}, bytes.NewReader(data))
			if !errors.Is(err, cas.ErrSizeMismatch) {
				t.Errorf("Ingest(size %d) = %v, want ErrSizeMismatch", size, err)
			}
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, cas.ErrNotFound) {
			t.Errorf("Stat after size mismatch = %v, want ErrNotFound", err)
		}
	})

	t.Run("BadDigests", func(t *testing.T) {
		s := newStore(t)
		for _, c := range []struct {
			d    digest.Digest
			want error
		}{
			{"md5:d41d8cd98f00b204e9800998ecf8427e", cas.ErrUnsupported},
			{"sha256:abc", cas.ErrInvalidDigest},
			{"sha256:../../etc/passwd", cas.ErrInvalidDigest},
			{digest.Digest("sha256:" + fmt.Sprintf("%060d", 0) + "ABCD"), cas.ErrInvalidDigest},
			{"", cas.ErrInvalidDigest},
			{"sha256", cas.ErrInvalidDigest},
		} {
			if _, err := s.Writer(ctx, ocispec.Descriptor{Digest: c.d, Size: -1}); !errors.Is(err, c.want) {
				t.Errorf("Writer(%q) = %v, want %v", c.d, err, c.want)
			}
			if _, err := s.Stat(ctx, c.d); !errors.Is(err, c.want) {
				t.Errorf("Stat(%q) = %v, want %v", c.d, err, c.want)
			}
		}
	})

	t.Run("IngestTwiceAndConcurrently", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytes.NewReader(data))
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent Ingest = %v", err)
			}
		}
	})

	t.Run("AbortLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		w, err := s.Writer(ctx, ocispec.Descriptor{Digest: d, Size: int64(len(data))})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data[:5])
		w.Abort()
		if _, err := s.Stat(ctx, d); !errors.Is(err, cas.ErrNotFound) {
			t.Errorf("Stat after Abort = %v", err)
		}
	})

	t.Run("WriterReaderFollows", func(t *testing.T) {
		s := newStore(t)
		w, err := s.Writer(ctx, ocispec.Descriptor{Digest: d, Size: int64(len(data))})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		r, err := w.OpenReader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		w.Write(data[:5])
		p := make([]byte, 5)
		if _, err := r.ReadAt(p, 0); err != nil || string(p) != "hello" || w.Offset() != 5 {
			t.Errorf("ReadAt during ingest = %q, %v (offset %d)", p, err, w.Offset())
		}
		w.Write(data[5:])
		if _, err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		q := make([]byte, len(data))
		if _, err := r.ReadAt(q, 0); err != nil || !bytes.Equal(q, data) {
			t.Errorf("ReadAt after commit = %q, %v", q, err)
		}
	})

	t.Run("Names", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Resolve(ctx, "x/y:1"); !errors.Is(err, cas.ErrNotFound) {
			t.Errorf("Resolve(missing) = %v", err)
		}
		for _, b := range [][]byte{data, []byte("other")} {
			if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
		}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(data)), Annotations: map[string]string{"k": "v"}}
		for _, n := range []string{"b/y:1", "a/y:1", "a/y@" + d.String()} {
			if err := s.Tag(ctx, n, desc); err != nil {
				t.Fatalf("Tag(%s) = %v", n, err)
			}
		}
		got, err := s.Resolve(ctx, "a/y:1")
		if err != nil || got.Digest != d || got.MediaType != desc.MediaType || got.Annotations["k"] != "v" ||
			got.Annotations[ocispec.AnnotationRefName] != "a/y:1" || got.Annotations[cas.AnnotationContainerdRef] != "a/y:1" {
			t.Errorf("Resolve = %+v, %v", got, err)
		}
		list, _ := s.List(ctx)
		var names []string
		for _, x := range list {
			names = append(names, x.Annotations[ocispec.AnnotationRefName])
		}
		if fmt.Sprint(names) != fmt.Sprint([]string{"a/y:1", "a/y@" + d.String(), "b/y:1"}) {
			t.Errorf("List names = %v", names)
		}
		d2 := digest.FromString("other")
		if err := s.Tag(ctx, "a/y:1", ocispec.Descriptor{Digest: d2, Size: 5}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Resolve(ctx, "a/y:1"); got.Digest != d2 {
			t.Errorf("Tag did not replace: %v", got.Digest)
		}
		if err := s.Untag(ctx, "a/y:1"); err != nil {
			t.Errorf("Untag = %v", err)
		}
		if err := s.Untag(ctx, "a/y:1"); !errors.Is(err, cas.ErrNotFound) {
			t.Errorf("second Untag = %v", err)
		}
		if list, _ := s.List(ctx); len(list) != 2 {
			t.Errorf("List after Untag = %d entries", len(list))
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		if _, err := cas.Ingest(ctx, s, ocispec.Descriptor{Digest: d, Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, d); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, cas.ErrNotFound) {
			t.Errorf("Stat after Delete = %v", err)
		}
		if err := s.Delete(ctx, d); err != nil {
			t.Errorf("Delete(missing) = %v", err)
		}
	})
}
