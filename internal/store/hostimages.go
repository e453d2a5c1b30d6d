package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// checkHostImages refuses an image list the host record should not carry:
// more than api.MaxHostImages entries (the record is read on every
// scheduling pass) or entries without a tenant or name.
func checkHostImages(imgs []api.HostImage) error {
	if len(imgs) > api.MaxHostImages {
		return fmt.Errorf("host reports %d images, more than the %d a host record holds: report the hot ones first and cap the list: %w",
			len(imgs), api.MaxHostImages, errdefs.ErrInvalidArgument)
	}
	for i, img := range imgs {
		if img.Tenant == "" || img.Name == "" {
			return fmt.Errorf("host image %d (%q of tenant %q) needs a tenant and a name: %w", i, img.Name, img.Tenant, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

var errImagesUnchanged = errors.New("host images unchanged")

// SetHostImages replaces the images the host reports holding (the
// scheduler's image locality reads them). Writing the list it already has
// is a no-op, so that a host repeating itself neither costs an etcd write
// nor wakes the scheduler. The host must be registered.
func (s *Store) SetHostImages(ctx context.Context, name string, imgs []api.HostImage) error {
	if err := checkHostImages(imgs); err != nil {
		return fmt.Errorf("host %q: %w", name, err)
	}
	_, err := s.UpdateHost(ctx, name, func(h *api.Host) error {
		if slices.EqualFunc(h.Images, imgs, sameHostImage) {
			return errImagesUnchanged
		}
		h.Images = imgs
		return nil
	})
	if errors.Is(err, errImagesUnchanged) {
		return nil
	}
	return err
}

func sameHostImage(a, b api.HostImage) bool {
	if a.Tenant != b.Tenant || a.Name != b.Name || a.Digest != b.Digest || a.Starts != b.Starts || a.Hot != b.Hot {
		return false
	}
	if (a.LastUsedAt == nil) != (b.LastUsedAt == nil) {
		return false
	}
	return a.LastUsedAt == nil || a.LastUsedAt.Equal(*b.LastUsedAt)
}
