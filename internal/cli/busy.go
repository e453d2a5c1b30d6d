package cli

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

// createReporting creates an instance and, when the server was busy and
// the client retried the create (429, see client/retry.go), says so on
// stderr: a start that took long because it queued should say why.
func createReporting(ctx context.Context, c *client.Client, req api.CreateInstanceRequest, stderr io.Writer) (api.Instance, error) {
	var retries atomic.Int64
	start := time.Now()
	ctx = client.WithRetryObserver(ctx, func(client.Retry) { retries.Add(1) })
	inst, err := c.CreateInstance(ctx, req)
	if n := retries.Load(); n > 0 && err == nil {
		fmt.Fprintf(stderr, "kanga: the server was busy starting other instances; the create was retried %d time%s over %s\n",
			n, pluralS(n), time.Since(start).Round(100*time.Millisecond))
	}
	return inst, err
}

func pluralS(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}
