package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/requestid"
	"github.com/kanga-run/kanga/internal/store"
)

// AuditLog is where the audit records go (*store.Store): an append-only
// hash chain.
type AuditLog interface {
	AppendAudit(ctx context.Context, recs []api.AuditRecord) ([]api.AuditRecord, error)
	ListAudit(ctx context.Context, f store.AuditFilter) ([]api.AuditRecord, error)
	VerifyAudit(ctx context.Context) (api.AuditVerification, error)
}

// auditTimeout bounds how long an answer waits for its audit record.
const auditTimeout = 10 * time.Second

// traced gives every request an ID (returned in the Kanga-Request-Id
// header, carried in the context to log lines and the host) and, for a
// mutating request, an audit record. The record is committed when the
// answer's status is written (or the connection is taken over for exec),
// before the client sees it: an answered mutation is always in the log.
func (s *Server) traced(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := ""
		if s.hostAPI {
			// The control plane authenticated and audited the request;
			// its ID ties the host's log lines to the API's.
			if h := r.Header.Get(api.HeaderRequestID); requestid.Valid(h) {
				id = h
			}
		}
		if id == "" {
			id = requestid.New()
		}
		w.Header().Set(api.HeaderRequestID, id)
		ctx := requestid.With(r.Context(), id)
		if s.audit == nil || !mutating(r.Method) {
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		e := &auditEntry{rec: api.AuditRecord{RequestID: id, Replica: s.replica, Method: r.Method,
			Path: r.URL.Path, Remote: remoteIP(r)}}
		r = r.WithContext(context.WithValue(ctx, auditKey{}, e))
		// The mux routes this very request (it sets Pattern and the path
		// values on it), so the entry can read them when it commits.
		e.req = r
		aw := &auditWriter{ResponseWriter: w, commit: func(status int) { s.commitAudit(e, status) }}
		next.ServeHTTP(aw, r)
		aw.done(http.StatusInternalServerError) // nothing written: the handler failed
	})
}

func mutating(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func remoteIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

type auditKey struct{}

// auditEntry is the audit record of one request while it is served.
type auditEntry struct {
	mu     sync.Mutex
	req    *http.Request
	rec    api.AuditRecord
	object string
}

// noteAuditPrincipal records who the request authenticated as.
func noteAuditPrincipal(ctx context.Context, p store.Principal, actingTenant string) {
	if e, ok := ctx.Value(auditKey{}).(*auditEntry); ok {
		e.mu.Lock()
		e.rec.Principal, e.rec.PrincipalName, e.rec.Tenant = p.TokenID, p.TokenName, actingTenant
		e.mu.Unlock()
	}
}

// setAuditObject names the object a request acted on when the path does
// not (a create names it in the body).
func setAuditObject(ctx context.Context, object string) {
	if e, ok := ctx.Value(auditKey{}).(*auditEntry); ok {
		e.mu.Lock()
		e.object = object
		e.mu.Unlock()
	}
}

// setAuditDetail adds what the path does not say. Never a secret.
func setAuditDetail(ctx context.Context, detail string) {
	if e, ok := ctx.Value(auditKey{}).(*auditEntry); ok {
		e.mu.Lock()
		e.rec.Detail = detail
		e.mu.Unlock()
	}
}

// verbAndObject derive the audit verb and object from the route: POST
// /v1/instances/{name}/stop is instances.stop on instances/NAME.
func verbAndObject(r *http.Request) (verb, object string) {
	_, path, _ := strings.Cut(r.Pattern, " ")
	segs := strings.Split(strings.TrimPrefix(path, "/v1/"), "/")
	res := segs[0]
	object = res
	if len(segs) > 1 && strings.HasPrefix(segs[1], "{") {
		object = res + "/" + r.PathValue(strings.Trim(segs[1], "{}."))
	}
	last := segs[len(segs)-1]
	switch {
	case len(segs) > 1 && !strings.HasPrefix(last, "{"):
		verb = res + "." + last
	case r.Method == http.MethodDelete:
		verb = res + ".delete"
	case r.Method == http.MethodPost:
		verb = res + ".create"
	default:
		verb = res + "." + strings.ToLower(r.Method)
	}
	return verb, object
}

func (s *Server) commitAudit(e *auditEntry, status int) {
	e.mu.Lock()
	rec := e.rec
	pattern := e.req.Pattern
	if pattern == "" || strings.HasSuffix(pattern, " /") || pattern == "/" {
		e.mu.Unlock()
		return // no route: nothing was called
	}
	rec.Verb, rec.Object = verbAndObject(e.req)
	if e.object != "" {
		rec.Object = e.object
	}
	e.mu.Unlock()
	rec.Time = s.now().UTC()
	rec.Status = status
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.req.Context()), auditTimeout)
	defer cancel()
	if err := s.auditor.record(ctx, rec); err != nil {
		// The call was made; its answer cannot be taken back. The record
		// goes to the log instead, where an operator finds it.
		b, _ := json.Marshal(rec)
		s.logger(ctx).Error("writing the audit record failed; the record follows", "err", err, "record", string(b))
	}
}

// auditWriter commits the audit record just before the status goes out.
type auditWriter struct {
	http.ResponseWriter
	once   sync.Once
	commit func(status int)
}

func (w *auditWriter) done(status int) { w.once.Do(func() { w.commit(status) }) }

func (w *auditWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.done(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditWriter) Write(p []byte) (int, error) {
	w.done(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

func (w *auditWriter) FlushError() error {
	w.done(http.StatusOK)
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack is exec's upgrade: the record says 101 and goes out before the
// stream starts.
func (w *auditWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.done(http.StatusSwitchingProtocols)
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// auditor commits records in groups: while one transaction is under way,
// the records of other requests queue and go together in the next, so a
// burst of calls costs a few transactions, not one each.
type auditor struct {
	log  AuditLog
	mu   sync.Mutex
	q    []*pendingAudit
	busy bool
}

type pendingAudit struct {
	rec  api.AuditRecord
	done chan error
}

func (a *auditor) record(ctx context.Context, rec api.AuditRecord) error {
	p := &pendingAudit{rec: rec, done: make(chan error, 1)}
	a.mu.Lock()
	a.q = append(a.q, p)
	if a.busy {
		a.mu.Unlock()
		select {
		case err := <-p.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	a.busy = true
	for len(a.q) > 0 {
		batch := a.q
		a.q = nil
		a.mu.Unlock()
		recs := make([]api.AuditRecord, len(batch))
		for i, b := range batch {
			recs[i] = b.rec
		}
		_, err := a.log.AppendAudit(ctx, recs)
		for _, b := range batch {
			b.done <- err
		}
		a.mu.Lock()
	}
	a.busy = false
	a.mu.Unlock()
	return <-p.done
}

// logger is the server's logger with the request's ID.
func (s *Server) logger(ctx context.Context) *slog.Logger {
	if id := requestid.From(ctx); id != "" {
		return s.log.With("request_id", id)
	}
	return s.log
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if !hasScope(ctx, api.ScopeAuditRead) {
		return fmt.Errorf("reading the audit log needs an administrator's token with scope %s: %w", api.ScopeAuditRead, errdefs.ErrPermissionDenied)
	}
	if s.audit == nil {
		return fmt.Errorf("this server keeps no audit log: %w", errdefs.ErrNotImplemented)
	}
	q := r.URL.Query()
	f := store.AuditFilter{Tenant: q.Get("tenant")}
	if v := q.Get("since"); v != "" {
		t, err := parseSince(v, s.now())
		if err != nil {
			return err
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			return fmt.Errorf("limit %q: a number from 1 to 100000: %w", v, errdefs.ErrInvalidArgument)
		}
		f.Limit = n
	}
	verify, err := boolParam(r, "verify")
	if err != nil {
		return err
	}
	out := api.AuditList{}
	if out.Items, err = s.audit.ListAudit(ctx, f); err != nil {
		return err
	}
	if out.Items == nil {
		out.Items = []api.AuditRecord{}
	}
	if verify {
		v, err := s.audit.VerifyAudit(ctx)
		if err != nil {
			return err
		}
		out.Verification = &v
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseSince reads a time: RFC 3339, or a duration before now ("1h",
// "30m", "7d").
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := parseLifetime(v)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("since %q: give an RFC 3339 time or a duration such as 1h, 30m or 7d: %w", v, errdefs.ErrInvalidArgument)
	}
	return now.Add(-d), nil
}

// parseLifetime reads a Go duration, or a number of days ("30d").
func parseLifetime(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 36500 {
			return 0, fmt.Errorf("%q is not a number of days", v)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}
