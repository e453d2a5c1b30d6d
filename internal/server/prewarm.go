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

// prewarmImage serves POST /v1/images/prewarm. With one host, "hosts: N"
// for any N >= 1 (or 0, every host) means that host; the answer lists the
// hosts actually warmed, so a client asking for more learns how many
// there are.
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
	p, ok := s.host.(ImagePrewarmer)
	if !ok {
		return fmt.Errorf("host %s cannot prewarm images: %w", s.host.Name(), errdefs.ErrNotImplemented)
	}
	img, pulled, err := p.PrewarmImage(r.Context(), req.Ref)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.PrewarmResult{
		Image: img,
		Hosts: []api.PrewarmedHost{{Host: s.host.Name(), Pulled: pulled}},
	})
	return nil
}
