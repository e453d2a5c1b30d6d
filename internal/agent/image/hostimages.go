package image

import (
	"context"
	"slices"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// notify marks the host's images as changed (see Changed).
func (s *Service) notify() {
	select {
	case s.changed <- struct{}{}:
	default: // a change is pending already
	}
}

// Changed receives when the images the host holds may have changed since
// HostImages was last called: after an import, a pull (prewarm pulls too)
// or a removal, and when an image is started from for the first time
// (it becomes hot). Later starts of a hot image do not signal, so a busy
// host does not report on every start; its start counts are as fresh as
// its last report. Several changes fold into one signal.
func (s *Service) Changed() <-chan struct{} { return s.changed }

// HostImages lists the images this host holds, one entry per tenant and
// image name, for the scheduler's image locality: the hot ones (started
// from since the agent started, the most recently used first), then the
// others by tenant and name, at most max of them (max <= 0 is
// api.MaxHostImages). It is the host's view and no tenant's: it names
// every tenant.
func (s *Service) HostImages(ctx context.Context, max int) ([]api.HostImage, error) {
	if max <= 0 || max > api.MaxHostImages {
		max = api.MaxHostImages
	}
	recs, err := s.client.ImageService().List(withNamespace(ctx))
	if err != nil {
		return nil, classify("list images", err)
	}
	var out []api.HostImage
	for _, rec := range recs {
		t, _, ok := ParseRecordName(rec.Name)
		if !ok {
			continue
		}
		if name, ok := ownedBy(rec, t); ok {
			out = append(out, api.HostImage{Tenant: t, Name: name, Digest: rec.Target.Digest.String()})
		}
	}
	s.usage.mu.Lock()
	for i := range out {
		if e := s.usage.m[usageKey{out[i].Tenant, out[i].Name}]; e != nil && e.starts > 0 {
			last := e.last.UTC()
			out[i].Starts, out[i].Hot, out[i].LastUsedAt = int64(e.starts), true, &last
		}
	}
	s.usage.mu.Unlock()
	slices.SortFunc(out, func(a, b api.HostImage) int {
		if a.Hot != b.Hot {
			if a.Hot {
				return -1
			}
			return 1
		}
		if a.Hot {
			if c := b.LastUsedAt.Compare(*a.LastUsedAt); c != 0 {
				return c
			}
		}
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	if len(out) > max {
		s.log.Debug("host holds more images than it reports", "images", len(out), "reported", max)
		out = out[:max]
	}
	return out, nil
}
