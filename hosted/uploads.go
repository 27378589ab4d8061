package hosted

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clowder-dev/clowder/cas"
)

// Upload is the state of an upload session.
type Upload struct {
	ID   string
	Repo string
	// Size is the number of bytes received so far.
	Size int64
}

// RangeError is ErrRangeInvalid with the session's state, so the caller
// can tell the client where to resume.
type RangeError struct {
	Upload Upload
	Start  int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("upload %s: chunk starts at %d, want %d: %v", e.Upload.ID, e.Start, e.Upload.Size, ErrRangeInvalid)
}

func (e *RangeError) Unwrap() error { return ErrRangeInvalid }

var uploadIDRE = regexp.MustCompile(`^[a-f0-9]{32}$`)

const sweepEvery = time.Hour

// StartUpload opens an upload session for repo.
func (h *Store) StartUpload(_ context.Context, repo string) (Upload, error) {
	if err := h.checkRepo(repo); err != nil {
		return Upload{}, err
	}
	h.mu.Lock()
	sweep := time.Since(h.lastSweep) > sweepEvery
	h.mu.Unlock()
	if sweep {
		h.sweepUploads()
	}
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	dir := filepath.Join(h.uploads, id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return Upload{}, fmt.Errorf("upload: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "repo"), []byte(repo), 0o644); err != nil {
		os.RemoveAll(dir)
		return Upload{}, fmt.Errorf("upload: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		os.RemoveAll(dir)
		return Upload{}, fmt.Errorf("upload: %w", err)
	}
	f.Close()
	return Upload{ID: id, Repo: repo}, nil
}

// session is an open, locked upload session.
type session struct {
	Upload
	h   *Store
	dir string
	f   *os.File
}

func (s *session) close() { s.f.Close() } // releases the flock

// remove deletes the session; the caller still holds it open.
func (s *session) remove() {
	os.Remove(filepath.Join(s.dir, "data"))
	os.Remove(filepath.Join(s.dir, "repo"))
	os.Remove(s.dir)
}

// open locks session id of repo. A session that is busy (another request
// holds it) is ErrUploadInvalid; one that does not exist or belongs to
// another repository is ErrUploadUnknown.
func (h *Store) open(repo, id string) (*session, error) {
	if err := h.checkRepo(repo); err != nil {
		return nil, err
	}
	unknown := fmt.Errorf("upload %q in %s: %w", id, repo, ErrUploadUnknown)
	if !uploadIDRE.MatchString(id) {
		return nil, unknown
	}
	dir := filepath.Join(h.uploads, id)
	owner, err := os.ReadFile(filepath.Join(dir, "repo"))
	if err != nil || string(owner) != repo {
		return nil, unknown
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
	if err != nil {
		return nil, unknown
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("upload %s: another request is writing it: %w", id, ErrUploadInvalid)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink == 0 {
		// Finished or cancelled by another process since we opened it.
		f.Close()
		return nil, unknown
	}
	return &session{Upload: Upload{ID: id, Repo: repo, Size: fi.Size()}, h: h, dir: dir, f: f}, nil
}

// UploadStatus returns the state of session id of repo.
func (h *Store) UploadStatus(_ context.Context, repo, id string) (Upload, error) {
	s, err := h.open(repo, id)
	if err != nil {
		return Upload{}, err
	}
	defer s.close()
	return s.Upload, nil
}

// AppendUpload appends a chunk to session id. start is the chunk's first
// byte (from Content-Range) or -1 for "at the end" (a streamed PATCH);
// length is its announced length or -1. A chunk that does not start where
// the upload ends is a *RangeError; a chunk that fails midway leaves the
// session as it was.
func (h *Store) AppendUpload(_ context.Context, repo, id string, start, length int64, r io.Reader) (Upload, error) {
	s, err := h.open(repo, id)
	if err != nil {
		return Upload{}, err
	}
	defer s.close()
	if err := s.append(start, length, r); err != nil {
		return s.Upload, err
	}
	return s.Upload, nil
}

func (s *session) append(start, length int64, r io.Reader) error {
	if start >= 0 && start != s.Size {
		return &RangeError{Upload: s.Upload, Start: start}
	}
	r, err := s.h.capUpload(s.Size, length, r)
	if err != nil {
		return fmt.Errorf("upload %s: %w", s.ID, err)
	}
	if _, err := s.f.Seek(s.Size, io.SeekStart); err != nil {
		return err
	}
	src := r
	if length >= 0 {
		src = io.LimitReader(r, length+1)
	}
	n, err := io.Copy(s.f, src)
	if err == nil && length >= 0 && n != length {
		err = fmt.Errorf("chunk has %d bytes, want %d: %w", n, length, ErrSizeInvalid)
	}
	if err != nil {
		_ = s.f.Truncate(s.Size)
		if errors.Is(err, ErrSizeInvalid) || errors.Is(err, ErrUploadTooLarge) {
			return fmt.Errorf("upload %s: %w", s.ID, err)
		}
		return fmt.Errorf("upload %s: %w: %w", s.ID, ErrUploadInvalid, err)
	}
	s.Size += n
	return nil
}

// FinishUpload closes session id: it appends the final chunk r (nil or
// empty when there is none; start and length as for AppendUpload), then
// ingests the whole upload as blob d through the verified ingest path and
// links it into repo. A digest or size mismatch ends the session.
func (h *Store) FinishUpload(ctx context.Context, repo, id string, d digest.Digest, start, length int64, r io.Reader) (ocispec.Descriptor, error) {
	if err := cas.ValidateDigest(d); err != nil {
		return ocispec.Descriptor{}, err
	}
	s, err := h.open(repo, id)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer s.close()
	if r == nil {
		r = strings.NewReader("")
	}
	var desc ocispec.Descriptor
	if s.Size == 0 && start <= 0 {
		// POST then PUT with the whole blob: stream it straight into the
		// ingest path instead of through the session file.
		if r, err = h.capUpload(0, length, r); err == nil {
			desc, err = h.ingest(ctx, d, length, r)
		}
	} else {
		if err := s.append(start, length, r); err != nil {
			return ocispec.Descriptor{}, err
		}
		if _, err := s.f.Seek(0, io.SeekStart); err != nil {
			return ocispec.Descriptor{}, err
		}
		desc, err = h.ingest(ctx, d, s.Size, io.LimitReader(s.f, s.Size))
	}
	if err != nil {
		if errors.Is(err, ErrDigestInvalid) || errors.Is(err, ErrSizeInvalid) || errors.Is(err, ErrUploadTooLarge) {
			s.remove()
		}
		return ocispec.Descriptor{}, err
	}
	if err := h.link(repo, d); err != nil {
		return ocispec.Descriptor{}, err
	}
	s.remove()
	return desc, nil
}

// CancelUpload ends session id and discards its bytes.
func (h *Store) CancelUpload(_ context.Context, repo, id string) error {
	s, err := h.open(repo, id)
	if err != nil {
		return err
	}
	defer s.close()
	s.remove()
	return nil
}

// sweepUploads removes sessions idle for longer than UploadTTL that no
// request holds.
func (h *Store) sweepUploads() {
	h.mu.Lock()
	h.lastSweep = time.Now()
	ttl := h.UploadTTL
	h.mu.Unlock()
	ents, err := os.ReadDir(h.uploads)
	if err != nil {
		return
	}
	for _, e := range ents {
		dir := filepath.Join(h.uploads, e.Name())
		fi, err := os.Stat(filepath.Join(dir, "data"))
		if errors.Is(err, fs.ErrNotExist) {
			// A session without data is a start that failed midway, or one
			// being created right now: only old ones go.
			if di, derr := e.Info(); derr == nil && time.Since(di.ModTime()) > ttl {
				os.RemoveAll(dir)
			}
			continue
		}
		if err != nil || time.Since(fi.ModTime()) <= ttl {
			continue
		}
		f, err := os.Open(filepath.Join(dir, "data"))
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(dir)
		}
		f.Close()
	}
}
