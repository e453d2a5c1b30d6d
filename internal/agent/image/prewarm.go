package image

import (
	"context"
	"errors"

	"github.com/kanga-run/kanga/errdefs"
)

// Prewarm makes tenant's image ready for a burst of starts: pulled if the
// tenant does not have it yet (an imported image must be there already),
// unpacked, and its layers and config resolved into the per-digest caches
// (Warm: not a start, so the image's start count stays honest). pulled
// tells whether it was fetched now.
func (s *Service) Prewarm(ctx context.Context, tenant, ref string) (res Resolved, pulled bool, err error) {
	if _, err := s.Get(ctx, tenant, ref); errors.Is(err, errdefs.ErrNotFound) {
		if _, err := s.Pull(ctx, tenant, ref, nil); err != nil {
			return Resolved{}, false, err
		}
		pulled = true
	} else if err != nil {
		return Resolved{}, false, err
	}
	if err := s.Unpack(ctx, tenant, ref); err != nil {
		return Resolved{}, false, err
	}
	res, err = s.Warm(ctx, tenant, ref)
	if err != nil {
		return Resolved{}, false, err
	}
	return res, pulled, nil
}
