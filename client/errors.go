package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/errdefs/errhttp"
)

// APIError is an error reported by the server: a non-2xx response, or an
// error frame or line of a stream. Its text is the server's message, and it
// unwraps to the errdefs sentinel of its Code, so
// errors.Is(err, errdefs.ErrNotFound) works across the wire.
type APIError struct {
	// StatusCode is the HTTP status, or 0 when the error arrived inside a
	// stream after a successful response.
	StatusCode int
	// Code is the class name, one of the errdefs codes ("NotFound",
	// "Conflict", ...) or "Internal".
	Code    string
	Message string
	// RequestID is the server's ID of the request (Kanga-Request-Id),
	// which names it in the server's log and audit log.
	RequestID string
	// RetryAfter is the pause the server asked for before the request is
	// sent again (its Retry-After header), 0 when it did not say.
	RetryAfter time.Duration
}

func (e *APIError) Error() string { return e.Message }

// Unwrap returns the errdefs sentinel of the error's class: that of its
// Code, or, for a code this client does not know (a newer server's), that
// of its HTTP status; nil when neither names a class.
func (e *APIError) Unwrap() error {
	if class := errdefs.FromCode(e.Code); class != nil {
		return class
	}
	if e.StatusCode != 0 {
		return errdefs.Class(errhttp.ToNative(e.StatusCode))
	}
	return nil
}

// fromAPI converts an api.Error received inside a stream.
func fromAPI(e api.Error) *APIError {
	msg := e.Message
	if msg == "" {
		msg = e.Code
	}
	return &APIError{Code: e.Code, Message: msg}
}

// decodeError turns a non-2xx response into an *APIError. It reads at most
// 64 KiB of the body.
func decodeError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var er api.ErrorResponse
	if err := json.Unmarshal(body, &er); err == nil && er.Error.Code != "" {
		e := fromAPI(er.Error)
		e.StatusCode = resp.StatusCode
		e.RequestID = resp.Header.Get(api.HeaderRequestID)
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return e
	}
	// No error body, as from a proxy in front of the server: the status
	// alone says the class.
	code := errdefs.Code(errhttp.ToNative(resp.StatusCode))
	msg := fmt.Sprintf("server answered %s", resp.Status)
	if text := strings.TrimSpace(string(body)); text != "" {
		if len(text) > 200 {
			text = text[:200] + "..."
		}
		msg += ": " + text
	}
	return &APIError{StatusCode: resp.StatusCode, Code: code, Message: msg, RequestID: resp.Header.Get(api.HeaderRequestID),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
}
