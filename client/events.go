package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/kanga-run/kanga/api"
)

// EventsOptions select the events of GET /v1/events.
type EventsOptions struct {
	// Since is an RFC 3339 time or a duration before now ("10m").
	Since string
	// Type is api.EventNormal or api.EventWarning; empty: both.
	Type string
	// Follow keeps the stream open for the events that happen.
	Follow bool
}

// Events calls fn with each event of the tenant's instances, oldest
// first; with Follow it returns only when ctx ends, fn fails or the
// server ends the stream.
func (c *Client) Events(ctx context.Context, opts EventsOptions, fn func(api.EventRecord) error) error {
	q := url.Values{}
	if opts.Since != "" {
		q.Set("since", opts.Since)
	}
	if opts.Type != "" {
		q.Set("type", opts.Type)
	}
	if opts.Follow {
		q.Set("follow", "true")
	}
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/events", q, nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var rec api.EventRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("reading the events: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading the events: %w", err)
	}
	return nil
}
