package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/errdefs/errhttp"
	"github.com/kanga-run/kanga/internal/httpserver"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// maxBody bounds JSON request bodies; image archives are streamed instead.
const maxBody = 1 << 20

func errNoRoute(r *http.Request) error {
	return fmt.Errorf("no API endpoint %s %s: see GET /v1/openapi.yaml for the API: %w", r.Method, r.URL.Path, errdefs.ErrNotFound)
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, status := errdefs.Code(err), errhttp.ToHTTP(err)
	if status >= 500 {
		s.logger(r.Context()).Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	setRetryAfter(w, err, status)
	writeJSON(w, status, api.ErrorResponse{Error: api.Error{Code: code, Message: errdefs.Message(err)}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decodeJSON reads a JSON body strictly: unknown fields are an error, so a
// typo in a spec is reported instead of silently ignored.
func decodeJSON(r *http.Request, v any) error {
	return decodeJSONLimit(r, v, maxBody)
}

// decodeJSONLimit is decodeJSON for a route of largeBodies.
func decodeJSONLimit(r *http.Request, v any, limit int64) error {
	// The body arrives through the MaxBytesReader of Handler (maxBody);
	// the LimitReader keeps the bound when a handler is called otherwise.
	dec := json.NewDecoder(io.LimitReader(r.Body, limit+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if tl := httpserver.TooLarge(err); tl != nil {
			return tl
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			httpserver.RefuseBody(r)
			timeout := ""
			if l, ok := httpserver.LimitsOf(r); ok {
				timeout = " within " + l.BodyTimeout.String()
			}
			return fmt.Errorf("request body did not arrive%s of its headers: send the whole document at once: %w", timeout, errdefs.ErrInvalidArgument)
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("request body is empty: send a JSON document: %w", errdefs.ErrInvalidArgument)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			// Name the field first, as every other 400 does.
			hint := ""
			// A user or group name (runAsUser: "nobody").
			if te.Value == "string" && (strings.HasSuffix(te.Field, "User") || strings.HasSuffix(te.Field, "Group") || strings.HasSuffix(te.Field, "Groups")) {
				hint = " (names are not resolved: give the numeric id)"
			}
			return fmt.Errorf("request body is not valid JSON for this endpoint: %s: a JSON %s where a %s is expected%s: %w", te.Field, te.Value, te.Type, hint, errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("request body is not valid JSON for this endpoint: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if dec.More() {
		return fmt.Errorf("request body has data after the JSON document: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		// RFC 7235: the scheme name is case-insensitive.
		ok := len(h) > 7 && strings.EqualFold(h[:7], "Bearer ")
		token := ""
		if ok {
			token = h[7:]
		}
		if !ok || strings.TrimSpace(token) == "" {
			httpserver.RefuseBody(r)
			s.writeError(w, r, fmt.Errorf("missing bearer token: send 'Authorization: Bearer TOKEN' (the CLI reads KANGA_TOKEN or the config that kanga up writes): %w", errdefs.ErrUnauthenticated))
			return
		}
		token = strings.TrimSpace(token)
		p, err := s.principals.do(r.Context(), token, func(ctx context.Context) (store.Principal, error) {
			return s.store.LookupPrincipal(ctx, token)
		})
		if err != nil {
			if errors.Is(err, store.ErrUnknownToken) || errors.Is(err, errdefs.ErrNotFound) {
				err = fmt.Errorf("the bearer token is not valid (unknown, revoked, or deleted with its tenant): check KANGA_TOKEN or the config that kanga up wrote: %w", errdefs.ErrUnauthenticated)
				httpserver.RefuseBody(r)
			}
			s.writeError(w, r, err)
			return
		}
		ctx, err := s.admit(r, p)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// actingTenant is the tenant a request acts in: the token's, or, for an
// administrator, the existing tenant that the Kanga-Tenant header names.
func (s *Server) actingTenant(r *http.Request, own string, admin bool) (string, error) {
	name := strings.TrimSpace(r.Header.Get(api.HeaderTenant))
	if name == "" || name == own {
		return own, nil
	}
	if !admin {
		return "", fmt.Errorf("header %s names tenant %q, but only an administrator's token may act in another tenant: drop the header or use an administrator's token: %w", api.HeaderTenant, name, errdefs.ErrPermissionDenied)
	}
	if err := tenant.Validate(name); err != nil {
		return "", fmt.Errorf("header %s: %w", api.HeaderTenant, err)
	}
	if _, err := s.store.GetTenant(r.Context(), name); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return "", fmt.Errorf("header %s names tenant %q, which does not exist: create it with POST /v1/tenants: %w", api.HeaderTenant, name, errdefs.ErrNotFound)
		}
		return "", err
	}
	return name, nil
}

type adminKey struct{}

// requireAdmin fails unless the caller's token is an administrator's.
func requireAdmin(ctx context.Context) error {
	if admin, _ := ctx.Value(adminKey{}).(bool); !admin {
		return fmt.Errorf("managing tenants needs an administrator's token (the one kanga up writes): %w", errdefs.ErrPermissionDenied)
	}
	return nil
}

func isAdmin(ctx context.Context) bool { return requireAdmin(ctx) == nil }

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		s.logger(r.Context()).Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start))
	})
}

// flushWriter flushes after every write so streamed output (logs,
// progress) reaches the client as it happens. Each write has
// httpserver.Limits.WriteTimeout: a client that stops reading a stream it asked for
// does not hold the handler for ever.
type flushWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func newFlushWriter(w http.ResponseWriter, r *http.Request) *flushWriter {
	f := &flushWriter{w: w, rc: http.NewResponseController(w)}
	if l, ok := httpserver.LimitsOf(r); ok {
		f.timeout = l.WriteTimeout
	}
	return f
}

func (f *flushWriter) Write(p []byte) (int, error) {
	if f.timeout > 0 {
		_ = f.rc.SetWriteDeadline(time.Now().Add(f.timeout))
		// Lifted after the write: a stream may be quiet for long (logs
		// -f), and an HTTP/2 stream is reset when its deadline passes,
		// writing or not.
		defer func() { _ = f.rc.SetWriteDeadline(time.Time{}) }()
	}
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}
