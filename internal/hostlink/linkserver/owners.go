package linkserver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostlink/join"
	"github.com/kanga-run/kanga/internal/store"
)

// owners is the link's view of which certificates each host may use,
// kept from the owner records' watch, with the requests open per host so
// that a revocation cuts them at once.
type owners struct {
	store join.CredentialStore
	log   *slog.Logger

	mu    sync.Mutex
	cache map[string]*store.HostOwner // nil value: no record
	open  map[string]map[*openReq]struct{}
}

type openReq struct {
	serial string
	cancel context.CancelFunc
}

func newOwners(st join.CredentialStore, log *slog.Logger) *owners {
	return &owners{store: st, log: log, cache: map[string]*store.HostOwner{}, open: map[string]map[*openReq]struct{}{}}
}

// follow applies the owner records' changes until ctx ends.
func (o *owners) follow(ctx context.Context) {
	for ev := range o.store.WatchHostOwners(ctx) {
		o.mu.Lock()
		if ev.Host == "" {
			// Changes may have been missed: forget everything and look
			// again at every open request's host.
			o.cache = map[string]*store.HostOwner{}
			hosts := make([]string, 0, len(o.open))
			for h := range o.open {
				hosts = append(hosts, h)
			}
			o.mu.Unlock()
			for _, h := range hosts {
				if own, err := o.store.GetHostOwner(ctx, h); err == nil {
					o.update(h, own)
				}
			}
			continue
		}
		o.mu.Unlock()
		o.update(ev.Host, ev.Owner)
	}
}

// update records a host's owner and cuts the requests of certificates it
// no longer names.
func (o *owners) update(host string, own *store.HostOwner) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cache[host] = own
	for r := range o.open[host] {
		if own == nil || !slices.Contains(own.Serials, r.serial) {
			o.log.Warn("hostlink: agent certificate revoked; closing its request", "host", host, "serial", r.serial)
			r.cancel()
		}
	}
}

// admit checks that serial is a certificate host may use, and registers
// the request so that a revocation ends it: ctx is the request's, the
// returned one ends with it or with the revocation.
func (o *owners) admit(ctx context.Context, host, serial string) (context.Context, func(), error) {
	o.mu.Lock()
	own, known := o.cache[host]
	o.mu.Unlock()
	if !known || own == nil || !slices.Contains(own.Serials, serial) {
		// Not cached, or not allowed as cached: the store decides.
		var err error
		if own, err = o.store.GetHostOwner(ctx, host); err != nil {
			return nil, nil, err
		}
		if own == nil {
			// A host that joined before owners were recorded keeps its
			// certificate: the first one seen is adopted.
			if _, err := o.store.AdoptHostCert(ctx, host, serial); err != nil {
				return nil, nil, err
			}
			if own, err = o.store.GetHostOwner(ctx, host); err != nil {
				return nil, nil, err
			}
		}
		o.mu.Lock()
		o.cache[host] = own
		o.mu.Unlock()
	}
	if own == nil || !slices.Contains(own.Serials, serial) {
		return nil, nil, fmt.Errorf("the certificate of host %q (serial %s) was revoked or replaced: an administrator issues a new join token (kanga host token create %s), then join again with an empty data dir: %w",
			host, serial, host, errdefs.ErrUnauthenticated)
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &openReq{serial: serial, cancel: cancel}
	o.mu.Lock()
	if o.open[host] == nil {
		o.open[host] = map[*openReq]struct{}{}
	}
	o.open[host][r] = struct{}{}
	o.mu.Unlock()
	return ctx, func() {
		cancel()
		o.mu.Lock()
		delete(o.open[host], r)
		if len(o.open[host]) == 0 {
			delete(o.open, host)
		}
		o.mu.Unlock()
	}, nil
}
