package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/store"
)

// VolumeStore keeps the tenants' persistent volumes (*store.Store); the
// tenant comes from the context. A store without it serves no volumes.
type VolumeStore interface {
	CreateVolume(ctx context.Context, nv store.NewVolume) (store.Volume, error)
	GetVolume(ctx context.Context, name string) (store.Volume, error)
	ListVolumes(ctx context.Context) ([]store.Volume, error)
	SetVolumePhase(ctx context.Context, name, phase, message string) error
	BeginDeleteVolume(ctx context.Context, name string) (store.Volume, error)
	DeleteVolume(ctx context.Context, name string) error
	// CountHostVolumes counts every tenant's volumes per host.
	CountHostVolumes(ctx context.Context) (map[string]int, error)
	// ClaimVolume makes an instance the one holder of a volume (pending
	// until confirmed); a volume another instance holds is ErrConflict.
	ClaimVolume(ctx context.Context, name, instance, uid string) (store.Volume, error)
	ConfirmVolumeClaim(ctx context.Context, name, uid string) error
	ReleaseVolumeClaim(ctx context.Context, name, uid string) error
}

func (s *Server) volumeStore() (VolumeStore, error) {
	if s.volumes == nil {
		return nil, fmt.Errorf("this server's store keeps no persistent volumes: %w", errdefs.ErrNotImplemented)
	}
	return s.volumes, nil
}

// newVolumeID names a volume on its host: random, so that a tenant's
// choice of names says nothing on the host and two tenants' volumes of
// one name never meet.
func newVolumeID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "pv-" + hex.EncodeToString(b), nil
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	vs, err := s.volumeStore()
	if err != nil {
		return err
	}
	var req api.CreateVolumeRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	setAuditObject(ctx, "volumes/"+req.Name)
	size, err := model.ValidateCreateVolume(&req)
	if err != nil {
		return err
	}
	h, err := s.volumeHost(ctx, vs, req.Host)
	if err != nil {
		return err
	}
	nv := store.NewVolume{Name: req.Name, Size: size, Encrypted: req.Encrypted, Host: h.Name()}
	if nv.ID, err = newVolumeID(); err != nil {
		return err
	}
	if req.Encrypted {
		nv.Key = make([]byte, hostcontract.VolumeKeySize)
		if _, err := rand.Read(nv.Key); err != nil {
			return err
		}
		defer clear(nv.Key)
	}
	if _, err := vs.CreateVolume(ctx, nv); err != nil {
		return err
	}
	if err := h.CreateVolume(ctx, nv.ID, nv.Size, nv.Encrypted, nv.Key); err != nil {
		// Nothing of it stays: the host undoes its half-made volume.
		if derr := vs.DeleteVolume(context.WithoutCancel(ctx), nv.Name); derr != nil {
			s.log.Warn("removing the record of a volume its host failed to make failed", "volume", nv.Name, "err", derr)
		}
		return fmt.Errorf("making volume %q on host %s: %w", nv.Name, nv.Host, err)
	}
	if err := vs.SetVolumePhase(ctx, nv.Name, api.VolumeAvailable, ""); err != nil {
		return err
	}
	v, err := vs.GetVolume(ctx, nv.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v.PersistentVolume)
	return nil
}

// volumeHostOf is a connected host that keeps volumes.
type volumeHostOf interface {
	hostcontract.Host
	hostcontract.VolumeHost
}

// volumeHost returns the host a new volume goes to: the one named, or
// of the ready, uncordoned hosts that keep volumes the one with fewest.
func (s *Server) volumeHost(ctx context.Context, vs VolumeStore, name string) (volumeHostOf, error) {
	if name != "" {
		h, ok := s.hosts.Host(name)
		if !ok || h.Name() != name {
			return nil, fmt.Errorf("host: %q is not a host connected to this control plane: %w", name, errdefs.ErrInvalidArgument)
		}
		vh, ok := h.(volumeHostOf)
		if !ok {
			return nil, fmt.Errorf("host: %q does not keep persistent volumes: %w", name, errdefs.ErrNotImplemented)
		}
		return vh, nil
	}
	counts, err := vs.CountHostVolumes(ctx)
	if err != nil {
		return nil, err
	}
	usable := map[string]bool{}
	if hosts, err := s.store.ListHosts(ctx); err == nil {
		for _, h := range hosts {
			usable[h.Name] = h.Status.Phase == api.HostReady && !h.Cordoned
		}
	}
	var best volumeHostOf
	for _, h := range s.hosts.All() {
		vh, ok := h.(volumeHostOf)
		if !ok {
			continue
		}
		if ok, known := usable[h.Name()]; known && !ok {
			continue
		}
		if best == nil || counts[h.Name()] < counts[best.Name()] ||
			(counts[h.Name()] == counts[best.Name()] && h.Name() < best.Name()) {
			best = vh
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no ready host keeps persistent volumes now: %w", errdefs.ErrUnavailable)
	}
	return best, nil
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) error {
	vs, err := s.volumeStore()
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := model.ValidateVolumeName("name", name); err != nil {
		return err
	}
	v, err := vs.GetVolume(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v.PersistentVolume)
	return nil
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) error {
	vs, err := s.volumeStore()
	if err != nil {
		return err
	}
	list, err := vs.ListVolumes(r.Context())
	if err != nil {
		return err
	}
	out := api.PersistentVolumeList{Items: make([]api.PersistentVolume, 0, len(list))}
	for _, v := range list {
		out.Items = append(out.Items, v.PersistentVolume)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	vs, err := s.volumeStore()
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := model.ValidateVolumeName("name", name); err != nil {
		return err
	}
	v, err := vs.BeginDeleteVolume(ctx, name)
	if err != nil {
		return err
	}
	h, ok := s.hosts.Host(v.Host)
	vh, isVH := h.(hostcontract.VolumeHost)
	if !ok || !isVH || h.Name() != v.Host {
		// Recorded as Deleting: rm again once the host is back.
		return fmt.Errorf("volume %q is on host %s, which is not connected now; it stays Deleting, run kanga volume rm %s again later: %w",
			name, v.Host, name, errdefs.ErrUnavailable)
	}
	if err := vh.RemoveVolume(ctx, v.ID); err != nil {
		msg := fmt.Sprintf("removing it from host %s failed: %v", v.Host, err)
		if perr := vs.SetVolumePhase(context.WithoutCancel(ctx), name, api.VolumeDeleting, msg); perr != nil {
			s.log.Warn("recording a failed volume removal failed", "volume", name, "err", perr)
		}
		return fmt.Errorf("volume %q: %w", name, err)
	}
	if err := vs.DeleteVolume(ctx, name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// bindVolumes finds the persistent volumes a validated spec names: each
// must exist in the tenant and be Available or in use, and all must be on
// one host, where the instance then runs.
func (s *Server) bindVolumes(ctx context.Context, spec *api.InstanceSpec) ([]api.BoundVolume, error) {
	refs := model.PersistentVolumeRefs(spec)
	if len(refs) == 0 {
		return nil, nil
	}
	vs, err := s.volumeStore()
	if err != nil {
		return nil, err
	}
	var out []api.BoundVolume
	for _, ref := range refs {
		v, err := vs.GetVolume(ctx, ref.Name)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("%s: volume %q does not exist in this tenant: create it first (kanga volume create %s --size 1Gi): %w",
				ref.Field, ref.Name, ref.Name, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return nil, err
		}
		if p := v.Status.Phase; p != api.VolumeAvailable && p != api.VolumeInUse {
			return nil, fmt.Errorf("%s: volume %q is %s: %w", ref.Field, ref.Name, p, errdefs.ErrFailedPrecondition)
		}
		if len(out) > 0 && out[0].Host != v.Host {
			return nil, fmt.Errorf("%s: volume %q is on host %s and volume %q on host %s: an instance's volumes must be on one host: %w",
				ref.Field, ref.Name, v.Host, out[0].Name, out[0].Host, errdefs.ErrInvalidArgument)
		}
		out = append(out, api.BoundVolume{Name: v.Name, ID: v.ID, Host: v.Host, Encrypted: v.Encrypted})
	}
	return out, nil
}

// claimVolumes makes inst the holder of its volumes (ReadWriteOnce). It
// returns the confirm, to run once the instance is stored, and the
// release, to run if it is not; on error nothing is claimed.
func (s *Server) claimVolumes(ctx context.Context, inst *api.Instance) (confirm, release func(), err error) {
	if len(inst.PersistentVolumes) == 0 {
		return func() {}, func() {}, nil
	}
	vs, err := s.volumeStore()
	if err != nil {
		return nil, nil, err
	}
	var claimed []string
	release = func() {
		ctx := context.WithoutCancel(ctx)
		for _, n := range slices.Backward(claimed) {
			if err := vs.ReleaseVolumeClaim(ctx, n, inst.UID); err != nil {
				s.log.Warn("releasing a volume claim failed; it lapses on its own", "volume", n, "instance", inst.Name, "err", err)
			}
		}
	}
	for i, b := range inst.PersistentVolumes {
		if _, err := vs.ClaimVolume(ctx, b.Name, inst.Name, inst.UID); err != nil {
			release()
			if errors.Is(err, errdefs.ErrConflict) {
				return nil, nil, fmt.Errorf("spec.volumes: %w", err)
			}
			return nil, nil, fmt.Errorf("volume %d (%s): %w", i, b.Name, err)
		}
		claimed = append(claimed, b.Name)
	}
	confirm = func() {
		ctx := context.WithoutCancel(ctx)
		for _, n := range claimed {
			if err := vs.ConfirmVolumeClaim(ctx, n, inst.UID); err != nil {
				s.log.Warn("confirming a volume claim failed", "volume", n, "instance", inst.Name, "err", err)
			}
		}
	}
	return confirm, release, nil
}
