// Package requestid carries the ID of an API request through a context,
// from the API server to the host that serves the request's host-side part
// (exec, logs), so that their log lines and the audit record share it.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"
)

type key struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the request ID ctx carries, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}

// New returns a fresh ID: 6 bytes of time (milliseconds, so IDs sort by
// time in logs) and 10 random bytes, in hex.
func New() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}

// Valid reports whether id looks like an ID New made: only such an ID is
// taken from a trusted caller's header, so nothing else reaches the logs.
func Valid(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
