package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// DefaultBodyIdleTimeout is how long a request body (a pushed blob or
// manifest) may send nothing before the request is failed.
const DefaultBodyIdleTimeout = time.Minute

// errBodyIdle is a request body that sent nothing for the idle timeout.
var errBodyIdle = errors.New("request body sent nothing")

// bodyIdle bounds the silence of every request body: before each read the
// connection's read deadline moves to now+idle, so a client trickling an
// upload holds its connection, goroutine and upload file for at most idle
// past its last byte, however long the upload runs. The deadline is
// cleared once the body ends (so it cannot fire while the response is
// being written, when net/http watches the connection for a hang-up).
func (s *Server) bodyIdle(next http.Handler) http.Handler {
	idle := s.opts.BodyIdleTimeout
	if idle == 0 {
		idle = DefaultBodyIdleTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if idle > 0 && r.Body != nil && r.Body != http.NoBody {
			r.Body = &idleBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: idle}
		}
		next.ServeHTTP(w, r)
	})
}

type idleBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	idle  time.Duration
	unset bool // the connection refused deadlines (a test recorder)
	ended bool
}

func (b *idleBody) Read(p []byte) (int, error) {
	if !b.unset && !b.ended {
		if err := b.rc.SetReadDeadline(time.Now().Add(b.idle)); err != nil {
			b.unset = true
		}
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.ended {
		b.ended = true
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Left expired: net/http's attempt to drain the rest of the
			// body before answering fails at once and closes the
			// connection after the answer.
			err = fmt.Errorf("%w for %v: %w", errBodyIdle, b.idle, err)
		case !b.unset:
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}
