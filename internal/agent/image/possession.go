package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/containerd/containerd/content"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kanga-run/kanga/errdefs"
)

// Content is shared by digest across tenants, and containerd happily
// builds a record on a blob that is already there: an archive (or a
// registry the tenant runs) could name another tenant's manifest or
// layers by digest without holding their bytes, and the import or pull
// would hand the tenant that content. So a tenant gets a record only of
// content it proved it has: every blob of the image (as far as this
// host's platform reaches) was in its archive, was fetched from its
// registry, or is reachable from the tenant's own records already (which
// were checked the same way when they were made). Blobs the host has
// for others are fetched again in a pull and compared with their digest,
// and the bytes thrown away: it costs the download the tenant would have
// had without the other tenant, no more.

// errNotPossessed marks content a tenant named but did not supply.
var errNotPossessed = errors.New("content not supplied")

// suppliedStore is a content store that notes the digest of every blob
// written through it, including blobs that were there already (their
// bytes came through all the same).
type suppliedStore struct {
	content.Store
	mu sync.Mutex
	m  map[digest.Digest]bool
}

func newSuppliedStore(cs content.Store) *suppliedStore {
	return &suppliedStore{Store: cs, m: map[digest.Digest]bool{}}
}

func (s *suppliedStore) add(d digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[d] = true
}

func (s *suppliedStore) has(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[d]
}

// Writer notes the blob when it is committed. containerd's importer
// opens a writer with a known digest only for manifests it generates
// from the archive's own config and layers (docker save); when that blob
// exists already, its bytes were still in hand, so it counts too.
func (s *suppliedStore) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	w, err := s.Store.Writer(ctx, opts...)
	if cerrdefs.IsAlreadyExists(err) && wo.Desc.Digest != "" {
		s.add(wo.Desc.Digest)
	}
	if err != nil {
		return nil, err
	}
	return &suppliedWriter{Writer: w, s: s}, nil
}

type suppliedWriter struct {
	content.Writer
	s *suppliedStore
}

func (w *suppliedWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	err := w.Writer.Commit(ctx, size, expected, opts...)
	if err == nil || cerrdefs.IsAlreadyExists(err) {
		// The writer digested what was written, whatever was expected.
		w.s.add(w.Writer.Digest())
	}
	return err
}

// owned returns the digests reachable from the tenant's records on this
// host's platform: content the tenant proved it has.
func (s *Service) owned(ctx context.Context, tenant string) (map[digest.Digest]bool, error) {
	recs, err := s.records(ctx, tenant)
	if err != nil {
		return nil, err
	}
	cs := s.client.ContentStore()
	owned := map[digest.Digest]bool{}
	var mu sync.Mutex
	children := images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		mu.Lock()
		owned[desc.Digest] = true
		mu.Unlock()
		cs, err := images.Children(ctx, cs, desc)
		if cerrdefs.IsNotFound(err) {
			return nil, nil // lost content: nothing below it to own
		}
		return cs, err
	})
	h := images.FilterPlatforms(children, s.platform)
	for _, rec := range recs {
		if err := images.Walk(ctx, h, rec.Target); err != nil {
			return nil, classify("read the images of tenant "+tenant, err)
		}
	}
	return owned, nil
}

// checkSupplied makes sure that every blob an import's walk met came in
// the archive or is the tenant's already.
func (s *Service) checkSupplied(ctx context.Context, tenant string, visited []ocispec.Descriptor, supplied *suppliedStore) error {
	var owned map[digest.Digest]bool
	for _, desc := range visited {
		if supplied.has(desc.Digest) {
			continue
		}
		if owned == nil {
			var err error
			if owned, err = s.owned(ctx, tenant); err != nil {
				return err
			}
		}
		if !owned[desc.Digest] {
			return fmt.Errorf("the image archive refers to %s (%s) but does not hold it; an archive must carry every blob of its images: %w",
				desc.Digest, desc.MediaType, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// possessionCheck returns a pull handler that, for each blob the host has
// already but the tenant does not own, fetches it from the registry and
// compares it with its digest before the pull goes on (containerd's fetch
// handler skips blobs it has).
func (s *Service) possessionCheck(tenant, name string, fetcher remotes.Fetcher) images.HandlerFunc {
	cs := s.client.ContentStore()
	var (
		mu    sync.Mutex
		owned map[digest.Digest]bool
	)
	isOwned := func(ctx context.Context, d digest.Digest) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if owned == nil {
			o, err := s.owned(ctx, tenant)
			if err != nil {
				return false, err
			}
			owned = o
		}
		return owned[d], nil
	}
	return func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if _, err := cs.Info(ctx, desc.Digest); cerrdefs.IsNotFound(err) {
			return nil, nil // not here: the fetch downloads and verifies it
		} else if err != nil {
			return nil, err
		}
		if ok, err := isOwned(ctx, desc.Digest); err != nil || ok {
			return nil, err
		}
		if err := fetchAndVerify(ctx, fetcher, desc); err != nil {
			s.log.Info("pull names content the host has but the registry did not supply", "image", name, "digest", desc.Digest, "tenant", tenant, "err", err)
			return nil, fmt.Errorf("the registry did not supply %s: %w: %w", desc.Digest, errNotPossessed, errdefs.ErrNotFound)
		}
		return nil, nil
	}
}

// fetchAndVerify downloads desc and checks its size and digest, keeping
// nothing.
func fetchAndVerify(ctx context.Context, fetcher remotes.Fetcher, desc ocispec.Descriptor) error {
	rc, err := fetcher.Fetch(ctx, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	v := desc.Digest.Verifier()
	n, err := io.Copy(v, io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return err
	}
	if n != desc.Size || !v.Verified() {
		return fmt.Errorf("got %d bytes not matching %s", n, desc.Digest)
	}
	return nil
}
