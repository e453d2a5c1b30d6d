package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/errdefs"
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

// Unwrap returns the errdefs sentinel of the error's class, or nil for
// unknown classes.
func (e *APIError) Unwrap() error { return errdefs.FromCode(e.Code) }

// fromAPI converts an api.Error received inside a stream.
func fromAPI(e api.Error) *APIError {
	msg := e.Message
	if msg == "" {
		msg = e.Code
	}
	return &APIError{Code: e.Code, Message: msg}
}

// statusCodes classifies responses that do not carry a JSON error body, such
// as those of a proxy in front of the server.
var statusCodes = map[int]string{
	http.StatusBadRequest:            "InvalidArgument",
	http.StatusUnauthorized:          "Unauthenticated",
	http.StatusForbidden:             "PermissionDenied",
	http.StatusNotFound:              "NotFound",
	http.StatusMethodNotAllowed:      "MethodNotAllowed",
	http.StatusRequestEntityTooLarge: "TooLarge",
	http.StatusConflict:              "Conflict",
	http.StatusTooManyRequests:       "TooManyRequests",
	http.StatusNotImplemented:        "NotImplemented",
	http.StatusBadGateway:            "Unavailable",
	http.StatusServiceUnavailable:    "Unavailable",
	http.StatusGatewayTimeout:        "DeadlineExceeded",
	http.StatusInternalServerError:   "Internal",
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
	code, ok := statusCodes[resp.StatusCode]
	if !ok {
		code = "Internal"
	}
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
