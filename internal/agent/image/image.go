// Package image imports, pulls and resolves container images in Kanga's
// containerd, scoped by tenant.
//
// Each tenant's image is its own containerd record (see records.go), so
// tenants never replace, remove or see each other's images, even under
// the same name; content and unpacked layers are stored once per host
// and shared by digest, but a tenant only gets a record of content it
// supplied itself (see possession.go).
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/containerdrt"
	"github.com/kanga-run/kanga/internal/model"
)

// tenantRe keeps tenant names safe inside a label key and a filter string.
var tenantRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Service manages images for all tenants of one host.
type Service struct {
	client      *containerd.Client
	snapshotter string
	platform    platforms.MatchComparer
	locks       keyedLocks
	log         *slog.Logger
	content     contentCache
	usage       usage
	now         func() time.Time
	// changed holds a token when the set of images (or of hot ones) may
	// have changed since the last HostImages; see Changed.
	changed chan struct{}
	// reg is what pulls may reach (see registry.go).
	reg atomic.Pointer[registries]
	// insecure is the operator's own --insecure-registry list; the
	// control plane's may add to it (AddInsecureRegistries); added is
	// the last list added.
	insecure []string
	added    []string
}

// New returns a Service that unpacks into snapshotter (overlayfs in Kanga).
func New(client *containerd.Client, snapshotter string) *Service {
	s := &Service{
		client:      client,
		snapshotter: snapshotter,
		platform:    platforms.Default(),
		log:         slog.Default().With("component", "image"),
		now:         time.Now,
		changed:     make(chan struct{}, 1),
	}
	s.reg.Store(newRegistries(nil, s.log))
	return s
}

// AllowInsecureRegistries sets the operator's --insecure-registry list
// (see ParseInsecureRegistries): the only registries pulls may reach at
// loopback, link-local, private or the host's own addresses, and the only
// ones spoken to over plain HTTP. Nothing is allowed until it is called.
func (s *Service) AllowInsecureRegistries(hosts []string) error {
	hosts, err := ParseInsecureRegistries(hosts)
	if err != nil {
		return err
	}
	s.insecure = hosts
	s.reg.Store(newRegistries(hosts, s.log))
	return nil
}

// AddInsecureRegistries adds the control plane's list to the operator's
// own for the pulls that follow (a kanga agent learns it when it
// registers); a value that does not parse is logged and skipped.
func (s *Service) AddInsecureRegistries(hosts []string) {
	if slices.Equal(hosts, s.added) {
		return
	}
	s.added = slices.Clone(hosts)
	all := slices.Clone(s.insecure)
	for _, h := range hosts {
		p, err := ParseInsecureRegistries([]string{h})
		if err != nil {
			s.log.Warn("ignoring an insecure registry from the control plane", "registry", h, "err", err)
			continue
		}
		if !slices.Contains(all, p[0]) {
			all = append(all, p[0])
		}
	}
	s.reg.Store(newRegistries(all, s.log))
}

// Config is the part of an OCI image config a container is built from.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	// StopSignal is the image's STOPSIGNAL ("SIGQUIT", "3"); empty is
	// SIGTERM.
	StopSignal string
}

// Normalize returns the canonical form of an image reference (see
// model.NormalizeImage). Records are stored under this form, so every
// lookup goes through it.
func Normalize(ref string) (string, error) { return model.NormalizeImage(ref) }

// Import reads an OCI or Docker image archive (as written by `skopeo copy
// ... oci-archive:` or `docker save`), records every image it names for the
// tenant, and unpacks them so that the first run does not wait for it.
// progress, if not nil, receives the bytes read so far; the caller sends the
// final Done line.
func (s *Service) Import(ctx context.Context, tenant string, r io.Reader, progress func(api.Progress)) ([]api.Image, error) {
	defer s.notify() // a partial import or a failed pull may have changed the set too
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	ctx = withNamespace(ctx)
	// The lease keeps the blobs from the garbage collector until records
	// point at them.
	ctx, done, err := s.client.WithLease(ctx)
	if err != nil {
		return nil, classify("import: take a lease", err)
	}
	defer done(context.WithoutCancel(ctx))

	pr := newProgressReader(r, progress)
	safe := SafeArchive(pr)
	defer safe.Close()
	store := newSuppliedStore(s.client.ContentStore())
	index, err := archive.ImportIndex(ctx, store, safe)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("read image archive: %v; expected an OCI archive (skopeo copy ... oci-archive:FILE:NAME) or a docker archive (docker save): %w", err, errdefs.ErrInvalidArgument)
	}
	pr.flush()
	store.add(index.Digest)

	named, visited, err := s.namedManifests(ctx, index)
	if err != nil {
		return nil, err
	}
	if err := s.checkSupplied(ctx, tenant, visited, store); err != nil {
		return nil, err
	}
	out := make([]api.Image, 0, len(named))
	for _, img := range named {
		report(progress, api.Progress{Status: "unpacking " + img.Name})
		rec, err := s.bind(ctx, tenant, img)
		if err != nil {
			return nil, err
		}
		if err := s.unpack(ctx, rec); err != nil {
			return nil, err
		}
		out = append(out, s.toAPI(ctx, rec))
	}
	return out, nil
}

// maxIndexSize bounds the archive index read into memory; a real one
// names a few images in a few hundred bytes each.
const maxIndexSize = 4 << 20

// namedManifests walks the imported index like containerd's client.Import
// does (labelling children so the collector keeps them), and returns one
// record per named manifest, with the name normalized, and every
// descriptor the walk met (for checkSupplied).
func (s *Service) namedManifests(ctx context.Context, index ocispec.Descriptor) ([]images.Image, []ocispec.Descriptor, error) {
	cs := s.client.ContentStore()
	var (
		named   []images.Image
		skipped []string
		visited []ocispec.Descriptor
	)
	var handler images.HandlerFunc = func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		visited = append(visited, desc)
		if desc.Digest != index.Digest {
			return images.Children(ctx, cs, desc)
		}
		if desc.Size > maxIndexSize {
			return nil, fmt.Errorf("the archive's index is %d bytes, more than the %d an index needs: %w", desc.Size, maxIndexSize, errdefs.ErrInvalidArgument)
		}
		p, err := content.ReadBlob(ctx, cs, desc)
		if err != nil {
			return nil, err
		}
		var idx ocispec.Index
		if err := json.Unmarshal(p, &idx); err != nil {
			return nil, fmt.Errorf("archive index: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		for _, m := range idx.Manifests {
			name, ok := archiveName(m.Annotations)
			if !ok {
				skipped = append(skipped, m.Digest.String())
				continue
			}
			norm, err := Normalize(name)
			if err != nil {
				return nil, fmt.Errorf("image archive names %q: %w", name, err)
			}
			named = append(named, images.Image{Name: norm, Target: m})
		}
		return idx.Manifests, nil
	}
	h := images.SetChildrenLabels(cs, images.FilterPlatforms(handler, s.platform))
	if err := images.WalkNotEmpty(ctx, h, index); err != nil {
		if errors.Is(err, errdefs.ErrInvalidArgument) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("read image archive: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(named) == 0 {
		return nil, nil, fmt.Errorf("image archive names no image for %s (unnamed manifests: %v); name the image with a full reference, e.g. skopeo copy ... oci-archive:FILE:kanga.test/app:v1: %w",
			platforms.DefaultString(), skipped, errdefs.ErrInvalidArgument)
	}
	return named, visited, nil
}

// archiveName returns the image name an index entry carries. containerd's
// own name annotation wins; an OCI ref.name counts only when it is a
// reference, not a bare tag such as "latest" (which names no repository).
func archiveName(ann map[string]string) (string, bool) {
	if name := ann[images.AnnotationImageName]; name != "" {
		return name, true
	}
	name := ann[ocispec.AnnotationRefName]
	if name == "" || !strings.ContainsAny(name, "/:@") {
		return "", false
	}
	return name, true
}

// Pull fetches ref from its registry into the tenant's record of it and
// unpacks it. Only public registries and those the operator allowed are
// reached (see registry.go); plain HTTP only for the latter. Content the
// host holds already for other tenants is fetched anyway, to check that
// the registry has it (see possession.go). progress, if not nil, receives
// download progress; the caller sends the final Done line.
func (s *Service) Pull(ctx context.Context, tenant, ref string, progress func(api.Progress)) (api.Image, error) {
	defer s.notify()
	if err := checkTenant(tenant); err != nil {
		return api.Image{}, err
	}
	name, err := Normalize(ref)
	if err != nil {
		return api.Image{}, err
	}
	ctx = withNamespace(ctx)
	// The lease keeps what is fetched from the garbage collector until the
	// record points at it.
	ctx, done, err := s.client.WithLease(ctx)
	if err != nil {
		return api.Image{}, classify("pull: take a lease", err)
	}
	defer done(context.WithoutCancel(ctx))

	report(progress, api.Progress{Status: "pulling " + name})
	stop := s.watchIngests(ctx, progress)
	img, err := s.fetch(ctx, tenant, name)
	stop()
	if err != nil {
		return api.Image{}, err
	}
	img.Name = name
	rec, err := s.bind(ctx, tenant, img)
	if err != nil {
		return api.Image{}, err
	}
	if err := s.unpack(ctx, rec); err != nil {
		return api.Image{}, err
	}
	report(progress, api.Progress{Status: "pulled " + name})
	return s.toAPI(ctx, rec), nil
}

// fetch downloads name for this host's platform into the content store
// (labelling children so the collector keeps them, as containerd's pull
// does) and returns the image, not recorded: containerd's Fetch and Pull
// would record it under the bare name, which is no tenant's.
func (s *Service) fetch(ctx context.Context, tenant, name string) (images.Image, error) {
	resolver := s.reg.Load().resolver()
	resolved, desc, err := resolver.Resolve(ctx, name)
	if err != nil {
		return images.Image{}, s.classifyPull(name, err)
	}
	fetcher, err := resolver.Fetcher(ctx, resolved)
	if err != nil {
		return images.Image{}, s.classifyPull(name, err)
	}
	cs := s.client.ContentStore()
	children := images.ChildrenHandler(cs)
	children = images.SetChildrenLabels(cs, children)
	children = images.FilterPlatforms(children, s.platform)
	children = images.LimitManifests(children, s.platform, 1)
	handler := images.Handlers(
		s.possessionCheck(tenant, name, fetcher),
		remotes.FetchHandler(cs, fetcher),
		children,
	)
	if err := images.Dispatch(ctx, handler, nil, desc); err != nil {
		if errors.Is(err, errNotPossessed) {
			return images.Image{}, fmt.Errorf("pull %s: %w", name, err)
		}
		return images.Image{}, s.classifyPull(name, err)
	}
	return images.Image{Name: name, Target: desc}, nil
}

// List returns the tenant's images, sorted by name.
func (s *Service) List(ctx context.Context, tenant string) ([]api.Image, error) {
	ctx = withNamespace(ctx)
	recs, err := s.records(ctx, tenant)
	if err != nil {
		return nil, err
	}
	out := make([]api.Image, 0, len(recs))
	for _, rec := range recs {
		out = append(out, s.toAPI(ctx, rec))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	s.withUsage(tenant, out)
	return out, nil
}

// Get resolves ref for the tenant. An image the tenant has not imported or
// pulled is not found, whether or not another tenant has it.
func (s *Service) Get(ctx context.Context, tenant, ref string) (containerd.Image, error) {
	rec, err := s.get(withNamespace(ctx), tenant, ref)
	if err != nil {
		return nil, err
	}
	return containerd.NewImageWithPlatform(s.client, rec, s.platform), nil
}

// get returns the tenant's record of ref. A reference with a digest
// (name@sha256:...) finds the record of that exact name (pulled by
// digest), or else the tenant's record of the same repository whose
// target is that digest, as Docker resolves repo@digest; another
// tenant's records are never looked at, even if their content is on the
// host.
func (s *Service) get(ctx context.Context, tenant, ref string) (images.Image, error) {
	if err := checkTenant(tenant); err != nil {
		return images.Image{}, err
	}
	name, err := Normalize(ref)
	if err != nil {
		return images.Image{}, err
	}
	rec, err := s.client.ImageService().Get(ctx, RecordName(tenant, name))
	if err == nil {
		if _, ok := ownedBy(rec, tenant); !ok {
			err = cerrdefs.ErrNotFound
		}
	}
	if cerrdefs.IsNotFound(err) {
		rec, err = s.byDigest(ctx, tenant, name)
	}
	if cerrdefs.IsNotFound(err) {
		return images.Image{}, fmt.Errorf("image %s not found; add it with `kanga image import` or `kanga image pull %s`: %w", name, ref, errdefs.ErrNotFound)
	}
	if err != nil {
		return images.Image{}, classify("get image "+name, err)
	}
	return rec, nil
}

// byDigest finds the tenant's record of name's repository whose target
// is name's digest; not found if name has no digest.
func (s *Service) byDigest(ctx context.Context, tenant, name string) (images.Image, error) {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return images.Image{}, cerrdefs.ErrNotFound
	}
	canon, ok := named.(reference.Canonical)
	if !ok {
		return images.Image{}, cerrdefs.ErrNotFound
	}
	recs, err := s.records(ctx, tenant)
	if err != nil {
		return images.Image{}, err
	}
	var found []images.Image
	for _, rec := range recs {
		n, _ := ownedBy(rec, tenant)
		if rec.Target.Digest != canon.Digest() {
			continue
		}
		if rn, err := reference.ParseNormalizedNamed(n); err == nil && rn.Name() == canon.Name() {
			found = append(found, rec)
		}
	}
	if len(found) == 0 {
		return images.Image{}, cerrdefs.ErrNotFound
	}
	// Several tags of one digest: any will do, the content is the same;
	// take the first by name so that the choice is stable.
	slices.SortFunc(found, func(a, b images.Image) int { return strings.Compare(a.Name, b.Name) })
	return found[0], nil
}

// Config returns the OCI image config of the tenant's image ref. It reads
// the image record (for the tenant check and the digest the name points
// at now) and takes the config from the per-digest cache that starts use,
// so that the API's check of every create costs one image lookup, not
// three content reads. It does not count as a use of the image.
func (s *Service) Config(ctx context.Context, tenant, ref string) (Config, error) {
	res, err := s.resolve(ctx, tenant, ref)
	if err != nil {
		return Config{}, err
	}
	return res.Config, nil
}

// Remove deletes the tenant's record of ref; other tenants' records, of
// the same name or the same content, are untouched. Content and
// snapshots go through containerd's garbage collector once no record
// and no container uses them.
func (s *Service) Remove(ctx context.Context, tenant, ref string) error {
	defer s.notify()
	ctx = withNamespace(ctx)
	name, err := Normalize(ref)
	if err != nil {
		return err
	}
	rec, err := s.get(ctx, tenant, name)
	if err != nil {
		return err
	}
	// name@digest may have found a record of another name: lock that one.
	unlock := s.locks.lock(rec.Name)
	defer unlock()
	return s.delete(ctx, tenant, rec)
}

// delete removes the tenant's record rec.
func (s *Service) delete(ctx context.Context, tenant string, rec images.Image) error {
	name, _ := ownedBy(rec, tenant)
	if err := s.client.ImageService().Delete(ctx, rec.Name); err != nil && !cerrdefs.IsNotFound(err) {
		return classify("remove image "+name, err)
	}
	s.usage.forget(tenant, name)
	return nil
}

// records returns the tenant's image records.
func (s *Service) records(ctx context.Context, tenant string) ([]images.Image, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	recs, err := s.client.ImageService().List(ctx, ownerFilter(tenant))
	if err != nil {
		return nil, classify("list the images of tenant "+tenant, err)
	}
	return slices.DeleteFunc(recs, func(rec images.Image) bool {
		_, ok := ownedBy(rec, tenant)
		return !ok
	}), nil
}

// RemoveTenant removes every image record of tenant (it was deleted);
// content other tenants' records point at stays. It returns the names it
// removed.
func (s *Service) RemoveTenant(ctx context.Context, tenant string) ([]string, error) {
	defer s.notify()
	ctx = withNamespace(ctx)
	recs, err := s.records(ctx, tenant)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, rec := range recs {
		unlock := s.locks.lock(rec.Name)
		err := s.delete(ctx, tenant, rec)
		unlock()
		if err != nil {
			return removed, err
		}
		name, _ := ownedBy(rec, tenant)
		removed = append(removed, name)
	}
	return removed, nil
}

// bind records img (named by its normalized name) as the tenant's: it
// creates the tenant's record or points it at img's content.
func (s *Service) bind(ctx context.Context, tenant string, img images.Image) (images.Image, error) {
	name := img.Name
	rec := images.Image{Name: RecordName(tenant, name), Target: img.Target, Labels: map[string]string{OwnerLabel: tenant}}
	unlock := s.locks.lock(rec.Name)
	defer unlock()
	is := s.client.ImageService()
	for {
		created, err := is.Create(ctx, rec)
		if err == nil {
			return created, nil
		}
		if !cerrdefs.IsAlreadyExists(err) {
			return images.Image{}, classify("record image "+name, err)
		}
		updated, err := is.Update(ctx, rec, "target", "labels."+OwnerLabel)
		if cerrdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return images.Image{}, classify("record image "+name, err)
		}
		return updated, nil
	}
}

func (s *Service) unpack(ctx context.Context, rec images.Image) error {
	img := containerd.NewImageWithPlatform(s.client, rec, s.platform)
	if err := img.Unpack(ctx, s.snapshotter); err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("image %s has no content for %s: %v: %w", displayName(rec), platforms.DefaultString(), err, errdefs.ErrInvalidArgument)
		}
		return classify("unpack image "+displayName(rec), err)
	}
	return nil
}

func (s *Service) toAPI(ctx context.Context, rec images.Image) api.Image {
	size, err := containerd.NewImageWithPlatform(s.client, rec, s.platform).Size(ctx)
	if err != nil {
		// Only the reported size suffers; the image may be for another
		// platform or have lost content.
		s.log.Debug("image size unknown", "image", displayName(rec), "err", err)
	}
	return api.Image{Name: displayName(rec), Digest: rec.Target.Digest.String(), Size: size, CreatedAt: rec.CreatedAt}
}

// withNamespace puts Kanga's containerd namespace on ctx unless a caller
// chose one: some client-side helpers require it on the context, beyond the
// client's default.
func withNamespace(ctx context.Context) context.Context {
	if _, ok := namespaces.Namespace(ctx); ok {
		return ctx
	}
	return namespaces.WithNamespace(ctx, containerdrt.Namespace)
}

func report(progress func(api.Progress), p api.Progress) {
	if progress != nil {
		progress(p)
	}
}

// classify maps a containerd error onto Kanga's classes.
func classify(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, c := range []struct {
		is    func(error) bool
		class error
	}{
		{cerrdefs.IsNotFound, errdefs.ErrNotFound},
		{cerrdefs.IsInvalidArgument, errdefs.ErrInvalidArgument},
		{cerrdefs.IsAlreadyExists, errdefs.ErrAlreadyExists},
		{cerrdefs.IsFailedPrecondition, errdefs.ErrFailedPrecondition},
		{cerrdefs.IsConflict, errdefs.ErrConflict},
		{cerrdefs.IsUnavailable, errdefs.ErrUnavailable},
		{cerrdefs.IsNotImplemented, errdefs.ErrNotImplemented},
	} {
		if c.is(err) {
			return fmt.Errorf("%s: %v: %w", what, err, c.class)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// classifyPull turns registry failures into not found (the registry
// answered that it does not have it) or unavailable (anything else). The
// second kind has one text whatever the cause (refused, timed out, not
// allowed, TLS, not a registry): a tenant must not learn from it which
// ports of an address answer. The operator's log has the cause.
func (s *Service) classifyPull(name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pull %s: %w", name, err)
	}
	if cerrdefs.IsNotFound(err) && !errors.Is(err, errBlocked) {
		var ne net.Error
		if !errors.As(err, &ne) {
			return fmt.Errorf("pull %s: the registry has no such image (%v): %w", name, err, errdefs.ErrNotFound)
		}
	}
	s.log.Info("pull failed", "image", name, "err", err)
	host := name
	if named, perr := reference.ParseNormalizedNamed(name); perr == nil {
		host = reference.Domain(named)
	}
	return fmt.Errorf("pull %s: registry %s could not be reached or did not answer as a registry: check the reference; a registry on a private or loopback address needs the operator's --insecure-registry: %w",
		name, host, errdefs.ErrUnavailable)
}

// keyedLocks serializes record updates per image name within this process;
// the agent is the only writer of its containerd namespace.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	refs int
}

func (k *keyedLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyedLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
