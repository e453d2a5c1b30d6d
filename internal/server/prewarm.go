package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/tenant"
)

// ImagePrewarmer is a host that can make an image ready to start ahead of
// a burst (see Agent.PrewarmImage). It is separate from Host so that a
// host without it still serves everything else.
type ImagePrewarmer interface {
	PrewarmImage(ctx context.Context, ref string) (img api.Image, pulled bool, err error)
}

// prewarmImage serves POST /v1/images/prewarm: "hosts: N" makes the image
// ready on N of the connected hosts (0: every host), in the order of
// prewarmOrder: hosts the scheduler can use that already hold the tenant's
// image first. The answer lists the hosts actually warmed, so a client
// asking for more learns how many there are.
func (s *Server) prewarmImage(w http.ResponseWriter, r *http.Request) error {
	var req api.PrewarmRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Ref == "" {
		return fmt.Errorf("ref is empty: name the image to prewarm, e.g. kanga.test/busybox:latest: %w", errdefs.ErrInvalidArgument)
	}
	if req.Hosts < 0 {
		return fmt.Errorf("hosts is %d: give how many hosts should have the image ready, or 0 for all: %w", req.Hosts, errdefs.ErrInvalidArgument)
	}
	hs, err := s.allHosts()
	if err != nil {
		return err
	}
	var warmers []ImagePrewarmer
	var names []string
	for _, h := range hs {
		if p, ok := h.(ImagePrewarmer); ok {
			warmers = append(warmers, p)
			names = append(names, h.Name())
		}
	}
	if len(warmers) == 0 {
		return fmt.Errorf("no connected host can prewarm images: %w", errdefs.ErrNotImplemented)
	}
	if len(warmers) > 1 {
		t, err := tenant.Name(r.Context())
		if err != nil {
			return err
		}
		// Best effort: without the registry the hosts go in name order.
		if records, err := s.store.ListHosts(r.Context()); err != nil {
			s.log.Warn("prewarm: reading the host registry failed; hosts go in name order", "err", err)
		} else {
			order := prewarmOrder(names, records, controlplane.ImageKey(t, req.Ref))
			ws, ns := make([]ImagePrewarmer, len(order)), make([]string, len(order))
			for i, k := range order {
				ws[i], ns[i] = warmers[k], names[k]
			}
			warmers, names = ws, ns
		}
	}
	n := len(warmers)
	if req.Hosts > 0 && req.Hosts < n {
		n = req.Hosts
	}
	res := api.PrewarmResult{}
	for i := 0; i < len(warmers) && len(res.Hosts) < n; i++ {
		if h, ok := warmers[i].(Host); ok {
			if err := s.settle(r.Context(), h); err != nil {
				if len(warmers) == 1 {
					return err
				}
				s.log.Warn("prewarm: a host has purges pending; trying the next", "host", names[i], "err", err)
				continue
			}
		}
		img, pulled, err := warmers[i].PrewarmImage(r.Context(), req.Ref)
		if err != nil {
			if len(warmers) == 1 {
				return err
			}
			s.log.Warn("prewarm failed on a host; trying the next", "host", names[i], "ref", req.Ref, "err", err)
			continue
		}
		if len(res.Hosts) == 0 {
			res.Image = img
		}
		res.Hosts = append(res.Hosts, api.PrewarmedHost{Host: names[i], Pulled: pulled})
	}
	if len(res.Hosts) == 0 {
		return fmt.Errorf("prewarming %s failed on every host (see the server log): %w", req.Ref, errdefs.ErrUnavailable)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// prewarmOrder returns the indexes of the connected hosts names in the
// order a prewarm of the image keyed key (controlplane.ImageKey) tries
// them, using the images the hosts reported to the registry:
//
//  1. Ready, uncordoned hosts that hold the tenant's image: the scheduler
//     sends the burst there (image locality), and they need no pull, which
//     for an imported image is the only way it can be warmed at all;
//  2. other Ready, uncordoned hosts, which pull it; once they hold it,
//     locality scores them like the first;
//  3. cordoned, NotReady or unregistered hosts last: the scheduler places
//     nothing there, so warming them helps no burst (they are still tried
//     when N covers every host).
//
// Within a group, hosts keep name order. Preferring hosts that lack the
// image (to spread it) was considered and not done: the burst goes where
// the image is, so warming elsewhere first would pull for nothing while
// the hosts that will take the burst stay cold.
func prewarmOrder(names []string, records []api.Host, key string) []int {
	byName := make(map[string]*api.Host, len(records))
	for i := range records {
		byName[records[i].Name] = &records[i]
	}
	rank := func(name string) int {
		h := byName[name]
		if h == nil || h.Cordoned || h.Status.Phase != api.HostReady {
			return 2
		}
		for _, img := range h.Images {
			if controlplane.HostImageKey(img) == key {
				return 0
			}
		}
		return 1
	}
	order := make([]int, len(names))
	ranks := make([]int, len(names))
	for i, n := range names {
		order[i], ranks[i] = i, rank(n)
	}
	slices.SortStableFunc(order, func(a, b int) int { return ranks[a] - ranks[b] })
	return order
}
