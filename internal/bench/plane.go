package bench

import (
	"context"
	"fmt"

	"github.com/kanga-run/kanga/internal/assembly/cp"
)

// plane is a control plane the benchmarks measure, assembled as kanga
// server's is (package cp): store, admin token and default tenant,
// network view, control-plane loop and API.
type plane struct {
	*cp.Plane
	stop func()
}

// servePlane opens a control plane with o, its API in plain HTTP on a
// loopback port unless o says otherwise, starts its loop and serves it
// until stop, which also closes it.
func servePlane(ctx context.Context, o cp.Options) (*plane, error) {
	if o.Listen == "" {
		o.Listen, o.PlainAPI = "127.0.0.1:0", true
	}
	p, err := cp.Open(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("opening the control plane: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan struct{})
	p.StartLoop()
	go func() { defer close(served); _ = p.Serve(sctx) }()
	return &plane{Plane: p, stop: func() {
		cancel()
		<-served
		p.Close()
	}}, nil
}
