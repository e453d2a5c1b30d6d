package hostlink

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/netview"
)

// netView streams the network view (see package netview) to an agent: a
// full state, then what changed, one JSON object a line.
func (s *Server) netView(w http.ResponseWriter, r *http.Request, host string) error {
	if s.NetView == nil {
		return fmt.Errorf("this control plane keeps no network view: %w", errdefs.ErrUnavailable)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for u := range s.NetView.Subscribe(r.Context()) {
		if enc.Encode(u) != nil || rc.Flush() != nil {
			return nil
		}
	}
	return nil
}

// WatchNetView follows the control plane's network view until ctx ends,
// reopening the stream when it breaks; the first update of each stream
// is a full state (Reset).
func (l *Link) WatchNetView(ctx context.Context) <-chan netview.Update {
	ch := make(chan netview.Update, 1)
	go func() {
		defer close(ch)
		wait := time.Second
		for ctx.Err() == nil {
			start := time.Now()
			err := l.netViewOnce(ctx, ch)
			if ctx.Err() != nil {
				return
			}
			if time.Since(start) > time.Minute {
				wait = time.Second // it ran a good while: not a server without the stream
			}
			l.log.Warn("network view stream broke; reopening", "err", err, "in", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, 30*time.Second)
		}
	}()
	return ch
}

func (l *Link) netViewOnce(ctx context.Context, ch chan<- netview.Update) error {
	base, idx := l.server()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.hostURL(base, "/netview"), nil)
	if err != nil {
		return err
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		l.failed(idx)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var u netview.Update
		if err := dec.Decode(&u); err != nil {
			return err
		}
		select {
		case ch <- u:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
