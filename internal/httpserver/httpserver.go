// Package httpserver is what every Kanga listener (the public API, the
// agents' link, an agent's host API) shares below its handlers: the
// http.Server with its limits on slow and large clients, what a handler
// may do to its request's body and connection (RefuseBody, StreamBody,
// FinishBody), and the index of methods behind 405 answers. The API and
// the host link both use it, so it depends on neither.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kanga-run/kanga/errdefs"
)

// Limits bound what a client can hold of a Kanga listener (the API, the
// agents' link, an agent's host API) before it has proven who it is and
// while it sends or reads slowly. Every listener serves through New, so
// that one set of limits applies to all of them.
type Limits struct {
	// ReadHeaderTimeout is how long a client may take to send the request
	// line and headers.
	ReadHeaderTimeout time.Duration
	// BodyTimeout is how long a client may take to send a request body,
	// counted from the end of the headers. Handlers that stream a body
	// legitimately (image import), once the caller is authenticated, trade
	// it for a minimum rate (StreamWindow, StreamMinBytes).
	BodyTimeout time.Duration
	// A streamed body must bring StreamMinBytes in every StreamWindow.
	StreamWindow   time.Duration
	StreamMinBytes int64
	// WriteTimeout bounds each write of a streamed response (logs,
	// progress) to a client that stopped reading.
	WriteTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request.
	IdleTimeout    time.Duration
	MaxHeaderBytes int
}

// DefaultLimits are the limits of every Kanga listener. A JSON body of the
// API is at most 1 MiB, so 30 s asks no more than 35 KB/s of a client; an
// image archive must arrive at 1 KiB/s or faster, measured over 30 s.
var DefaultLimits = Limits{
	ReadHeaderTimeout: 10 * time.Second,
	BodyTimeout:       30 * time.Second,
	StreamWindow:      30 * time.Second,
	StreamMinBytes:    30 << 10,
	WriteTimeout:      60 * time.Second,
	IdleTimeout:       90 * time.Second,
	// Room for an exec's command and environment, which travel in the
	// query string (a single argument of a process is at most 128 KiB).
	MaxHeaderBytes: 256 << 10,
}

// New returns an http.Server for h with the limits l; the caller sets the
// TLS configuration and serves. Errors net/http logs itself (TLS
// handshakes, timeouts) go to log at debug level.
func New(h http.Handler, l Limits, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.Default()
	}
	return &http.Server{
		Handler:           LimitBodies(h, l),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

type connKey struct{}

// conn is what a handler may do to its request's connection beyond the
// ResponseWriter: extend its read deadline for a legitimate stream, or
// have it closed after the reply.
type conn struct {
	limits Limits
	rc     *http.ResponseController
	// closeAfterReply makes net/http close an HTTP/1 connection once the
	// response is written instead of reading the rest of the body to keep
	// it; it needs net/http's own ResponseWriter, which only the outermost
	// handler has.
	closeAfterReply func()
}

// LimitBodies gives every request body BodyTimeout to arrive. The
// deadline is lifted once the body is read to its end, so that a handler
// that waits long after (a stop with a grace period) keeps its
// connection. Handlers reach the connection through RefuseBody,
// StreamBody and FinishBody.
func LimitBodies(h http.Handler, l Limits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		c := &conn{limits: l, rc: rc, closeAfterReply: func() {
			// A MaxBytesReader past its limit is net/http's one public
			// way to mark an HTTP/1 connection for closing after the
			// reply; nothing is read from the client here.
			_, _ = http.MaxBytesReader(w, io.NopCloser(strings.NewReader("x")), 0).Read(make([]byte, 1))
		}}
		// A copy: net/http looks at the original request's body after the
		// handler (and before it writes a response).
		r2 := r.WithContext(context.WithValue(r.Context(), connKey{}, c))
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && l.BodyTimeout > 0 {
			_ = rc.SetReadDeadline(time.Now().Add(l.BodyTimeout))
			r2.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
		h.ServeHTTP(w, r2)
	})
}

// deadlineBody lifts the body's read deadline at its end.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	done   bool
	failed bool // a read failed: the rest of the body is not worth waiting for
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		if !b.done {
			b.done = true
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	case err != nil:
		b.failed = true
	}
	return n, err
}

func connOf(r *http.Request) *conn {
	c, _ := r.Context().Value(connKey{}).(*conn)
	return c
}

// LimitsOf returns the limits of the listener r came through; false for a
// request that did not come through LimitBodies (a handler called
// directly, as in a unit test).
func LimitsOf(r *http.Request) (Limits, bool) {
	if c := connOf(r); c != nil {
		return c.limits, true
	}
	return Limits{}, false
}

// RefuseBody is for a request answered without reading its body (no or a
// wrong credential): the connection is closed after the reply, at once,
// rather than kept while the client trickles the rest.
func RefuseBody(r *http.Request) {
	c := connOf(r)
	if c == nil || r.ContentLength == 0 {
		return
	}
	if r.ProtoMajor == 1 {
		c.closeAfterReply()
	}
	_ = c.rc.SetReadDeadline(time.Now())
}

// StreamBody trades the body's fixed deadline for a minimum rate, for an
// authenticated handler that reads a long body (an image archive).
func StreamBody(r *http.Request) {
	c := connOf(r)
	if c == nil || r.ContentLength == 0 || c.limits.StreamWindow <= 0 {
		return
	}
	b := &rateBody{ReadCloser: r.Body, c: c, start: time.Now()}
	_ = c.rc.SetReadDeadline(b.start.Add(c.limits.StreamWindow))
	r.Body = b
}

// rateBody moves the read deadline a window ahead each time a window's
// worth of bytes has arrived: a client that sends less than
// StreamMinBytes in StreamWindow runs into the deadline.
type rateBody struct {
	io.ReadCloser
	c      *conn
	start  time.Time
	n      int64
	done   bool
	failed bool
}

func (b *rateBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		if !b.done {
			b.done = true
			_ = b.c.rc.SetReadDeadline(time.Time{})
		}
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		b.failed = true
		err = fmt.Errorf("the request body arrived slower than %d bytes in %s; the connection was closed: %w",
			b.c.limits.StreamMinBytes, b.c.limits.StreamWindow, errdefs.ErrInvalidArgument)
	case b.n >= b.c.limits.StreamMinBytes:
		b.start, b.n = time.Now(), 0
		_ = b.c.rc.SetReadDeadline(b.start.Add(b.c.limits.StreamWindow))
	}
	return n, err
}

// FinishBody reads what is left of a streamed body (an import that
// failed, or the padding after a tar archive's end) within a few seconds
// so that the connection can carry the next request. If too much is left
// it has the connection closed after the reply instead. It must run
// before the handler returns: net/http, in full-duplex mode, would
// otherwise read the rest itself after the handler, concurrently with
// its wait for the next request.
func FinishBody(r *http.Request) {
	const (
		most    = 1 << 20
		timeout = 5 * time.Second
	)
	c := connOf(r)
	if !bodyFailed(r.Body) {
		if c != nil {
			_ = c.rc.SetReadDeadline(time.Now().Add(timeout))
		}
		n, err := io.Copy(io.Discard, io.LimitReader(r.Body, most+1))
		if err == nil && n <= most {
			return
		}
	}
	if c != nil && r.ProtoMajor == 1 {
		c.closeAfterReply()
	}
}

// bodyFailed reports whether a read of body failed (a deadline ran out):
// the client is too slow to be waited for again.
func bodyFailed(body io.Reader) bool {
	switch b := body.(type) {
	case *rateBody:
		return b.failed || bodyFailed(b.ReadCloser)
	case *deadlineBody:
		return b.failed
	}
	return false
}

// TooLarge turns the error of a body read past its limit
// (http.MaxBytesReader's) into one the client can act on; nil for any
// other error.
func TooLarge(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("request body is larger than %d bytes, the most this endpoint accepts: send a smaller document: %w", mbe.Limit, errdefs.ErrTooLarge)
	}
	return nil
}

// Methods knows which methods each path of a mux serves, so that its
// catch-all can answer a wrong method on an existing path with 405 and
// an Allow header (RFC 9110 15.5.6) rather than 404. net/http's mux does
// that by itself only without a catch-all route.
type Methods struct {
	paths *http.ServeMux
	allow map[string][]string
}

// NewMethods returns an empty index.
func NewMethods() *Methods {
	return &Methods{paths: http.NewServeMux(), allow: map[string][]string{}}
}

// Add records that pattern (without its method) serves method.
func (m *Methods) Add(method, pattern string) {
	if _, ok := m.allow[pattern]; !ok {
		m.paths.Handle(pattern, http.NotFoundHandler())
	}
	m.allow[pattern] = append(m.allow[pattern], method)
	if method == http.MethodGet {
		m.allow[pattern] = append(m.allow[pattern], http.MethodHead)
	}
}

// NotAllowed returns, for a request no route took, the error to answer
// with when its path exists under other methods, after setting the Allow
// header; nil when the path does not exist.
func (m *Methods) NotAllowed(w http.ResponseWriter, r *http.Request) error {
	_, pattern := m.paths.Handler(r)
	if pattern == "" {
		return nil
	}
	methods := strings.Join(m.allow[pattern], ", ")
	w.Header().Set("Allow", methods)
	return fmt.Errorf("%s %s: this endpoint allows %s only: %w", r.Method, r.URL.Path, methods, errdefs.ErrMethodNotAllowed)
}
