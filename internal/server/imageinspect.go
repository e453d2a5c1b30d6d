package server

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

// getImage answers GET /v1/images/{ref}: the caller's image of that name,
// what it runs by default and the hosts that hold it. Only hosts that list
// the image are asked its configuration, so that an inspect never pulls.
func (s *Server) getImage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name, err := model.NormalizeImage(r.PathValue("ref"))
	if err != nil {
		return err
	}
	hs, err := s.allHosts()
	if err != nil {
		return err
	}
	var (
		d     api.ImageDetail
		found bool
	)
	for _, h := range hs {
		imgs, err := h.ListImages(ctx)
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name(), err)
		}
		i := slices.IndexFunc(imgs, func(im api.Image) bool { return im.Name == name })
		if i < 0 {
			continue
		}
		im := imgs[i]
		d.Hosts = append(d.Hosts, api.ImageHost{Host: h.Name(), Digest: im.Digest, LastUsedAt: im.LastUsedAt, Starts: im.Starts})
		if found {
			continue
		}
		cfg, err := h.ImageConfig(ctx, name)
		if err != nil {
			return fmt.Errorf("host %s: image %s: %w", h.Name(), name, err)
		}
		found = true
		d.Name, d.Digest, d.Size, d.CreatedAt = im.Name, im.Digest, im.Size, im.CreatedAt
		d.Entrypoint, d.Cmd = cfg.Entrypoint, cfg.Cmd
	}
	if !found {
		return fmt.Errorf("image %s not found: kanga image ls lists your images: %w", name, errdefs.ErrNotFound)
	}
	slices.SortFunc(d.Hosts, func(a, b api.ImageHost) int { return strings.Compare(a.Host, b.Host) })
	writeJSON(w, http.StatusOK, d)
	return nil
}
