package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/errdefs"
)

// ImagePrewarmer is a host that can make an image ready to start ahead of
// a burst (see Agent.PrewarmImage). It is separate from Host so that a
// host without it still serves everything else.
type ImagePrewarmer interface {
	PrewarmImage(ctx context.Context, ref string) (img api.Image, pulled bool, err error)
}

// prewarmImage serves POST /v1/images/prewarm: "hosts: N" makes the image
// ready on N of the connected hosts (0: every host), those that already
// have it first, so that a prewarm does not pull where it need not. The
// answer lists the hosts actually warmed, so a client asking for more
// learns how many there are.
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
	n := len(warmers)
	if req.Hosts > 0 && req.Hosts < n {
		n = req.Hosts
	}
	res := api.PrewarmResult{}
	for i := 0; i < len(warmers) && len(res.Hosts) < n; i++ {
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
