package image

import (
	"context"
	"slices"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/kanga-run/kanga/api"
)

// Resolved is an image resolved for a container start.
type Resolved struct {
	// Image is the tenant's image record, for containerd's helpers.
	Image containerd.Image
	// Name is the normalized reference, Digest the manifest it names now.
	Name   string
	Digest digest.Digest
	// ChainID identifies the unpacked layers: the parent of a container's
	// snapshot.
	ChainID string
	// Snapshotter holds the unpacked layers.
	Snapshotter string
	Config      Config
}

// resolvedContent is what a manifest digest determines for good: content
// is addressed by its digest, so it never goes stale.
type resolvedContent struct {
	chainID string
	config  Config
}

// contentCache remembers resolvedContent per manifest digest, so that a
// start reads the image record only (for the tenant check and the
// digest the name points at now) instead of also the manifest and config
// blobs, twice (once for the spec, once for the snapshot's parent). It
// holds a few hundred bytes per image the host has started.
type contentCache struct {
	mu sync.Mutex
	m  map[digest.Digest]resolvedContent
}

func (c *contentCache) get(d digest.Digest) (resolvedContent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, ok := c.m[d]
	return rc, ok
}

func (c *contentCache) put(d digest.Digest, rc resolvedContent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[digest.Digest]resolvedContent{}
	}
	c.m[d] = rc
}

// Resolve resolves ref for a container of the tenant: like Get, plus the
// layers' chain id and the image config, from the cache when this host
// has resolved the same content before. Every call counts as a use of the
// image (see Hot).
func (s *Service) Resolve(ctx context.Context, tenant, ref string) (Resolved, error) {
	res, err := s.resolve(ctx, tenant, ref)
	if err == nil && s.usage.record(tenant, res.Name, s.now()) {
		s.notify() // the image just became hot
	}
	return res, err
}

// Warm resolves ref like Resolve, filling the cache, without counting a
// use: for prewarming ahead of starts.
func (s *Service) Warm(ctx context.Context, tenant, ref string) (Resolved, error) {
	return s.resolve(ctx, tenant, ref)
}

func (s *Service) resolve(ctx context.Context, tenant, ref string) (Resolved, error) {
	ctx = withNamespace(ctx)
	rec, err := s.get(ctx, tenant, ref)
	if err != nil {
		return Resolved{}, err
	}
	img := containerd.NewImageWithPlatform(s.client, rec, s.platform)
	d := rec.Target.Digest
	rc, ok := s.content.get(d)
	if !ok {
		diffIDs, err := img.RootFS(ctx)
		if err != nil {
			return Resolved{}, classify("read layers of image "+displayName(rec), err)
		}
		spec, err := img.Spec(ctx)
		if err != nil {
			return Resolved{}, classify("read config of image "+displayName(rec), err)
		}
		c := spec.Config
		rc = resolvedContent{
			chainID: identity.ChainID(diffIDs).String(),
			config:  Config{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, StopSignal: c.StopSignal},
		}
		s.content.put(d, rc)
	}
	return Resolved{Image: img, Name: displayName(rec), Digest: d, ChainID: rc.chainID, Snapshotter: s.snapshotter, Config: rc.config}, nil
}

// usage counts container starts per tenant and image name, for Hot.
type usage struct {
	mu sync.Mutex
	m  map[usageKey]*use
}

type usageKey struct{ tenant, name string }

type use struct {
	last   time.Time
	starts uint64
}

// record counts a start and reports whether it was the first of the
// tenant's image.
func (u *usage) record(tenant, name string, now time.Time) (first bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[usageKey]*use{}
	}
	k := usageKey{tenant, name}
	e := u.m[k]
	if e == nil {
		e = &use{}
		u.m[k] = e
	}
	if now.After(e.last) { // concurrent starts may record out of order
		e.last = now
	}
	e.starts++
	return e.starts == 1
}

// forget drops the tenant's use of name.
func (u *usage) forget(tenant, name string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, usageKey{tenant, name})
}

// HotImage is an image this host started containers from.
type HotImage struct {
	Name     string
	LastUsed time.Time
	Starts   uint64 // since the agent started
}

// Hot lists the images the tenant started containers from on this host
// since the agent started, the most recently used first. With tenant ""
// it lists the host's: every tenant's starts summed per image, which is
// what a scheduler wants for locality (content is stored once per host)
// and what no tenant may see.
func (s *Service) Hot(tenant string) []HotImage {
	s.usage.mu.Lock()
	byName := map[string]*HotImage{}
	for k, e := range s.usage.m {
		if tenant != "" && k.tenant != tenant {
			continue
		}
		h := byName[k.name]
		if h == nil {
			h = &HotImage{Name: k.name}
			byName[k.name] = h
		}
		h.Starts += e.starts
		if e.last.After(h.LastUsed) {
			h.LastUsed = e.last
		}
	}
	s.usage.mu.Unlock()
	out := make([]HotImage, 0, len(byName))
	for _, h := range byName {
		out = append(out, *h)
	}
	slices.SortFunc(out, func(a, b HotImage) int {
		if c := b.LastUsed.Compare(a.LastUsed); c != 0 {
			return c
		}
		return compareStrings(a.Name, b.Name)
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Snapshotter is the snapshotter images are unpacked into.
func (s *Service) Snapshotter() string { return s.snapshotter }

// Unpack makes sure the tenant's image ref is unpacked into the
// snapshotter (import and pull unpack; the garbage collector may have
// removed the snapshots since, if no container used them).
func (s *Service) Unpack(ctx context.Context, tenant, ref string) error {
	ctx = withNamespace(ctx)
	rec, err := s.get(ctx, tenant, ref)
	if err != nil {
		return err
	}
	img := containerd.NewImageWithPlatform(s.client, rec, s.platform)
	ok, err := img.IsUnpacked(ctx, s.snapshotter)
	if err != nil {
		return classify("check unpacked layers of image "+displayName(rec), err)
	}
	if ok {
		return nil
	}
	return s.unpack(ctx, rec)
}

// withUsage adds the tenant's use of each image (see Hot) to imgs.
func (s *Service) withUsage(tenant string, imgs []api.Image) {
	s.usage.mu.Lock()
	defer s.usage.mu.Unlock()
	for i := range imgs {
		if e := s.usage.m[usageKey{tenant, imgs[i].Name}]; e != nil {
			last := e.last.UTC()
			imgs[i].LastUsedAt = &last
			imgs[i].Starts = int64(e.starts)
		}
	}
}
