package simhost

import (
	"context"
	"fmt"
	"io"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// APIHost stands in for the host behind the API (hostcontract.Host) in front
// of simulated hosts: every image is known, with a command, so creates
// pass the API's image check; nothing else is served.
type APIHost struct{ c Config }

// NewAPIHost is the API's stand-in for a host of c.
func NewAPIHost(c Config) APIHost { return APIHost{c: c} }

var _ hostcontract.Host = APIHost{}

// Directory is the API's host directory (server.Hosts) over stand-ins, in
// place of the link's hostclient.Directory: simulated hosts have no host
// API to call.
type Directory []APIHost

// Host returns the stand-in of that name.
func (d Directory) Host(name string) (hostcontract.Host, bool) {
	for _, h := range d {
		if h.Name() == name {
			return h, true
		}
	}
	return nil, false
}

// All returns the stand-ins.
func (d Directory) All() []hostcontract.Host {
	out := make([]hostcontract.Host, len(d))
	for i, h := range d {
		out[i] = h
	}
	return out
}

func (a APIHost) Name() string             { return a.c.Name }
func (a APIHost) RuntimeClasses() []string { return a.c.Record().RuntimeClasses }
func (a APIHost) Capacity() hostcontract.Capacity {
	return hostcontract.Capacity{CPUs: a.c.CPUs, Memory: a.c.Memory}
}

func (APIHost) ImageConfig(context.Context, string) (hostcontract.ImageConfig, error) {
	return hostcontract.ImageConfig{Cmd: []string{"sleep"}}, nil
}

func (APIHost) ListImages(context.Context) ([]api.Image, error) { return nil, nil }

func (APIHost) ImportImage(context.Context, io.Reader, func(api.Progress)) ([]api.Image, error) {
	return nil, notServed("images")
}

func (APIHost) PullImage(context.Context, string, func(api.Progress)) (api.Image, error) {
	return api.Image{}, notServed("images")
}

func (APIHost) Logs(context.Context, *api.Instance, string, bool, io.Writer) error {
	return notServed("logs")
}

func (APIHost) Exec(context.Context, *api.Instance, hostcontract.ExecRequest) (int, error) {
	return 0, notServed("exec")
}

func (APIHost) Stats(context.Context, *api.Instance) (api.InstanceStats, error) {
	return api.InstanceStats{}, notServed("stats")
}

func (APIHost) SLA(context.Context, *api.Instance) (api.SLAReport, error) {
	return api.SLAReport{}, notServed("SLA reports")
}

func notServed(what string) error {
	return fmt.Errorf("a simulated host has no %s: %w", what, errdefs.ErrNotImplemented)
}
