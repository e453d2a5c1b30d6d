package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/httpstream"
)

// Hosts finds the hosts the API talks to for what only a host can do
// (logs, exec, stats, images): one per Ready host, reached over its host
// API (hostclient.Directory). kanga up's own host is one of them, joined
// like any other.
type Hosts interface {
	// Host returns the named host, or false if it is not connected.
	Host(name string) (hostcontract.Host, bool)
	// All returns the connected hosts.
	All() []hostcontract.Host
}

// noHosts is the directory of a control plane without an agents' link:
// it reaches no host.
type noHosts struct{}

func (noHosts) Host(string) (hostcontract.Host, bool) { return nil, false }
func (noHosts) All() []hostcontract.Host              { return nil }

// runningOn reads the instance a route names, checks it with check (if
// any), and returns it with its host's T, an optional part of the host
// contract: the instance must be Running (409), its host must offer T
// (501, saying the host cannot do what).
func runningOn[T any](s *Server, r *http.Request, what string, check func(*api.Instance) error) (*api.Instance, T, error) {
	var none T
	inst, err := s.store.GetInstance(r.Context(), r.PathValue("name"))
	if err != nil {
		return nil, none, err
	}
	if check != nil {
		if err := check(inst); err != nil {
			return nil, none, err
		}
	}
	if inst.Status.Phase != api.PhaseRunning {
		return nil, none, fmt.Errorf("instance %q is %s, not Running: %w", inst.Name, inst.Status.Phase, errdefs.ErrConflict)
	}
	host, err := s.hostOf(inst)
	if err != nil {
		return nil, none, err
	}
	t, ok := host.(T)
	if !ok {
		return nil, none, fmt.Errorf("the host of instance %q cannot %s: %w", inst.Name, what, errdefs.ErrNotImplemented)
	}
	return inst, t, nil
}

// hostOf returns the host an instance is placed on.
func (s *Server) hostOf(inst *api.Instance) (hostcontract.Host, error) {
	if inst.Status.Host == "" {
		return nil, fmt.Errorf("instance %q is not placed on a host yet (%s): %w", inst.Name, inst.Status.Phase, errdefs.ErrFailedPrecondition)
	}
	h, ok := s.hosts.Host(inst.Status.Host)
	if !ok {
		return nil, fmt.Errorf("instance %q is on host %q, which is not connected to this server now: %w", inst.Name, inst.Status.Host, errdefs.ErrUnavailable)
	}
	return h, nil
}

func (s *Server) allHosts() ([]hostcontract.Host, error) {
	hs := s.hosts.All()
	if len(hs) == 0 {
		return nil, fmt.Errorf("no host is connected: start an agent (kanga agent --join ...): %w", errdefs.ErrUnavailable)
	}
	return hs, nil
}

// imageConfig asks the hosts in turn; the first that has the image (or can
// pull it) answers.
func (s *Server) imageConfig(ctx context.Context, ref string) (hostcontract.ImageConfig, error) {
	hs, err := s.allHosts()
	if err != nil {
		return hostcontract.ImageConfig{}, err
	}
	var first error
	for _, h := range hs {
		cfg, err := h.ImageConfig(ctx, ref)
		if err == nil {
			return cfg, nil
		}
		if first == nil || !errors.Is(err, errdefs.ErrNotFound) && errors.Is(first, errdefs.ErrNotFound) {
			first = err
		}
	}
	return hostcontract.ImageConfig{}, first
}

// listImages merges the hosts' images by name and digest.
func (s *Server) listAllImages(ctx context.Context) ([]api.Image, error) {
	hs, err := s.allHosts()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []api.Image
	for _, h := range hs {
		imgs, err := h.ListImages(ctx)
		if err != nil {
			return nil, fmt.Errorf("host %s: %w", h.Name(), err)
		}
		for _, im := range imgs {
			if k := im.Name + "@" + im.Digest; !seen[k] {
				seen[k] = true
				out = append(out, im)
			}
		}
	}
	return out, nil
}

// pullAll pulls ref on every host, so that any of them can run it.
func (s *Server) pullAll(ctx context.Context, ref string, progress func(api.Progress)) (api.Image, error) {
	hs, err := s.allHosts()
	if err != nil {
		return api.Image{}, err
	}
	var img api.Image
	for i, h := range hs {
		if err := s.settle(ctx, h); err != nil {
			return api.Image{}, err
		}
		im, err := h.PullImage(ctx, ref, httpstream.NotDone(progress))
		if err != nil {
			return api.Image{}, fmt.Errorf("host %s: %w", h.Name(), err)
		}
		if i == 0 {
			img = im
		}
	}
	return img, nil
}

// importAll imports the archive on every host; with more than one it is
// spooled to a temporary file first, since the body can be read once.
func (s *Server) importAll(ctx context.Context, r io.Reader, progress func(api.Progress)) ([]api.Image, error) {
	hs, err := s.allHosts()
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		if err := s.settle(ctx, h); err != nil {
			return nil, err
		}
	}
	if len(hs) == 1 {
		return hs[0].ImportImage(ctx, r, httpstream.NotDone(progress))
	}
	f, err := os.CreateTemp("", "kanga-import-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return nil, fmt.Errorf("reading the image archive: %w", err)
	}
	var out []api.Image
	for i, h := range hs {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		imgs, err := h.ImportImage(ctx, f, httpstream.NotDone(progress))
		if err != nil {
			return nil, fmt.Errorf("host %s: %w", h.Name(), err)
		}
		if i == 0 {
			out = imgs
		}
	}
	return out, nil
}

// largest is the capacity of the largest connected host, for rejecting a
// spec no host could ever hold.
func (s *Server) largest() hostcontract.Capacity {
	var c hostcontract.Capacity
	for _, h := range s.hosts.All() {
		hc := h.Capacity()
		c.CPUs = max(c.CPUs, hc.CPUs)
		c.Memory = max(c.Memory, hc.Memory)
		c.Disk = max(c.Disk, hc.Disk)
	}
	return c
}
