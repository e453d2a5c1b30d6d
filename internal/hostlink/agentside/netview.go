package agentside

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/hostlink"
)

// WatchNetView follows the control plane's network view until ctx ends,
// reopening the stream when it breaks; the first update of each stream
// is a full state (Reset).
func (l *Link) WatchNetView(ctx context.Context) <-chan hostcontract.NetUpdate {
	ch := make(chan hostcontract.NetUpdate, 1)
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

func (l *Link) netViewOnce(ctx context.Context, ch chan<- hostcontract.NetUpdate) error {
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
		return hostlink.ReadError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var line hostlink.NetViewUpdate
		if err := dec.Decode(&line); err != nil {
			return err
		}
		u := line.ForHost()
		select {
		case ch <- u:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
