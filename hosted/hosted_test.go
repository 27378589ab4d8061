package hosted_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/clowder-dev/clowder/cas"
	"github.com/clowder-dev/clowder/hosted"
)

func open(t *testing.T, root string) *hosted.Store {
	t.Helper()
	l, err := cas.OpenLayout(root)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hosted.Open(l, root, "local")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestOpenValidatesPrefix(t *testing.T) {
	l, err := cas.OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", "a/b", "Local", "-x", "../x"} {
		if _, err := hosted.Open(l, l.Root(), p); err == nil {
			t.Errorf("Open(prefix %q) succeeded", p)
		}
	}
	h, err := hosted.Open(l, l.Root(), "my-site")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"my-site/a": true, "my-site": true, "my-site2/a": false, "docker.io/my-site": false} {
		if got := h.Owns(name); got != want {
			t.Errorf("Owns(%q) = %v, want %v", name, got, want)
		}
	}
}

// Two processes on one root (two Stores here) share links and upload
// sessions through the files alone.
func TestTwoStoresShareOneRoot(t *testing.T) {
	root := t.TempDir()
	a, b := open(t, root), open(t, root)
	ctx := context.Background()
	blob := []byte("0123456789abcdefghij")
	d := digest.FromBytes(blob)

	u, err := a.StartUpload(ctx, "local/x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AppendUpload(ctx, "local/x", u.ID, 0, 10, bytes.NewReader(blob[:10])); err != nil {
		t.Fatal(err)
	}
	if st, err := a.UploadStatus(ctx, "local/x", u.ID); err != nil || st.Size != 10 {
		t.Fatalf("UploadStatus = %+v, %v; want 10 bytes", st, err)
	}
	if _, err := a.FinishUpload(ctx, "local/x", u.ID, d, 10, 10, bytes.NewReader(blob[10:])); err != nil {
		t.Fatal(err)
	}
	f, err := b.OpenBlob(ctx, "local/x", d)
	if err != nil {
		t.Fatalf("the other store cannot read the blob: %v", err)
	}
	f.Close()
	if _, err := b.Mount(ctx, "local/y", "", d); err != nil {
		t.Fatalf("anonymous mount through the other store: %v", err)
	}
	if _, err := b.UploadStatus(ctx, "local/x", u.ID); !errors.Is(err, hosted.ErrUploadUnknown) {
		t.Fatalf("finished session: %v, want ErrUploadUnknown", err)
	}
}

// blockingReader delivers some bytes, then blocks until released.
type blockingReader struct {
	first   []byte
	release chan struct{}
	started chan struct{}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if len(r.first) > 0 {
		n := copy(p, r.first)
		r.first = r.first[n:]
		return n, nil
	}
	close(r.started)
	<-r.release
	return 0, io.ErrUnexpectedEOF
}

// A session that one request is writing is refused to another, and a chunk
// that fails midway leaves the session as it was.
func TestBusySessionAndFailedChunk(t *testing.T) {
	h := open(t, t.TempDir())
	ctx := context.Background()
	u, err := h.StartUpload(ctx, "local/x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.AppendUpload(ctx, "local/x", u.ID, 0, 3, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	br := &blockingReader{first: []byte("defg"), release: make(chan struct{}), started: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := h.AppendUpload(ctx, "local/x", u.ID, 3, 100, br)
		done <- err
	}()
	<-br.started
	if _, err := h.AppendUpload(ctx, "local/x", u.ID, 3, 1, strings.NewReader("d")); !errors.Is(err, hosted.ErrUploadInvalid) {
		t.Fatalf("append to a busy session: %v, want ErrUploadInvalid", err)
	}
	close(br.release)
	if err := <-done; !errors.Is(err, hosted.ErrUploadInvalid) {
		t.Fatalf("failed chunk: %v, want ErrUploadInvalid", err)
	}
	if st, err := h.UploadStatus(ctx, "local/x", u.ID); err != nil || st.Size != 3 {
		t.Fatalf("after a failed chunk: %+v, %v; want 3 bytes", st, err)
	}
	var re *hosted.RangeError
	if _, err := h.AppendUpload(ctx, "local/x", u.ID, 4, 1, strings.NewReader("e")); !errors.As(err, &re) || re.Upload.Size != 3 {
		t.Fatalf("out-of-order chunk: %v, want a RangeError at 3", err)
	}
}

func TestIdleUploadsAreSwept(t *testing.T) {
	root := t.TempDir()
	h := open(t, root)
	ctx := context.Background()
	old, _ := h.StartUpload(ctx, "local/x")
	fresh, _ := h.StartUpload(ctx, "local/x")
	past := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(filepath.Join(root, ".clowder", "uploads", old.ID, "data"), past, past); err != nil {
		t.Fatal(err)
	}
	h2 := open(t, root) // a restart sweeps
	if _, err := h2.UploadStatus(ctx, "local/x", old.ID); !errors.Is(err, hosted.ErrUploadUnknown) {
		t.Fatalf("idle session after a restart: %v, want ErrUploadUnknown", err)
	}
	if _, err := h2.UploadStatus(ctx, "local/x", fresh.ID); err != nil {
		t.Fatalf("fresh session after a restart: %v", err)
	}
}

// Manifests, their names and links live in the shared layout and are
// visible to a store opened later (a restart).
func TestManifestSurvivesReopen(t *testing.T) {
	root := t.TempDir()
	h := open(t, root)
	ctx := context.Background()
	cfg := []byte(`{}`)
	dc := digest.FromBytes(cfg)
	if _, err := h.PutBlob(ctx, "local/x", dc, 2, bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + dc.String() + `","size":2},"layers":[]}`)
	if _, err := h.PutManifest(ctx, "local/x", "v1", "", m, nil); err != nil {
		t.Fatal(err)
	}
	h2 := open(t, root)
	got, err := h2.GetManifest(ctx, "local/x", "v1")
	if err != nil || !bytes.Equal(got.Body, m) || got.Desc.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("GetManifest after reopen = %+v, %v", got.Desc, err)
	}
	repos, err := h2.Repositories(ctx)
	if err != nil || len(repos) != 1 || repos[0] != "local/x" {
		t.Fatalf("Repositories = %v, %v", repos, err)
	}
}

// max_upload_size: a monolithic upload, a chunk and a streamed finish past
// the limit are refused with ErrUploadTooLarge; nothing lands under blobs/
// and a refused chunk leaves the session as it was.
func TestMaxUploadSize(t *testing.T) {
	root := t.TempDir()
	h := open(t, root)
	h.MaxUploadSize = 10
	ctx := context.Background()
	big := []byte("0123456789abc")
	d := digest.FromBytes(big)
	if _, err := h.PutBlob(ctx, "local/a", d, int64(len(big)), bytes.NewReader(big)); !errors.Is(err, hosted.ErrUploadTooLarge) {
		t.Fatalf("PutBlob of 13 bytes with a 10-byte limit = %v", err)
	}
	if _, err := h.PutBlob(ctx, "local/a", d, -1, bytes.NewReader(big)); !errors.Is(err, hosted.ErrUploadTooLarge) {
		t.Fatalf("PutBlob of 13 bytes of unknown length = %v", err)
	}
	u, err := h.StartUpload(ctx, "local/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.AppendUpload(ctx, "local/a", u.ID, 0, 8, bytes.NewReader(big[:8])); err != nil {
		t.Fatal(err)
	}
	if _, err := h.AppendUpload(ctx, "local/a", u.ID, -1, -1, bytes.NewReader(big[8:])); !errors.Is(err, hosted.ErrUploadTooLarge) {
		t.Fatalf("streamed chunk past the limit = %v", err)
	}
	if st, err := h.UploadStatus(ctx, "local/a", u.ID); err != nil || st.Size != 8 {
		t.Fatalf("session after a refused chunk = %+v, %v; want 8 bytes", st, err)
	}
	if _, err := h.FinishUpload(ctx, "local/a", u.ID, d, 8, 5, bytes.NewReader(big[8:])); !errors.Is(err, hosted.ErrUploadTooLarge) {
		t.Fatalf("closing chunk past the limit = %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "blobs", "sha256")); len(ents) != 0 {
		t.Fatalf("%d blobs stored past the limit", len(ents))
	}
	small := big[:10]
	if _, err := h.PutBlob(ctx, "local/a", digest.FromBytes(small), -1, bytes.NewReader(small)); err != nil {
		t.Fatalf("PutBlob at the limit = %v", err)
	}
}
