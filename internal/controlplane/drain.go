package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/tenant"
)

// DrainStore is what Drain needs of the store.
type DrainStore interface {
	UpdateHost(ctx context.Context, name string, fn func(*api.Host) error) (*api.Host, error)
	ListAllInstances(ctx context.Context) ([]api.Instance, int64, error)
	UpdateInstance(ctx context.Context, name string, fn func(*api.Instance) error) (*api.Instance, error)
}

// errSkip aborts an instance update that no longer applies.
var errSkip = errors.New("skip")

// Drain cordons host and re-creates its restartable instances Pending, so
// that the scheduler places them on other hosts while the host's agent
// stops its copies (they are no longer assigned to it). Instances that
// would not run again elsewhere (restart policy Never, stopped, being
// deleted) stay and are reported with why. Any replica may drain: the
// writes only take instances off a host, each one compare-and-swapped, so
// they cannot over-commit anything.
func Drain(ctx context.Context, st DrainStore, host string, now time.Time) (api.DrainReport, error) {
	rep := api.DrainReport{Host: host, Moved: []string{}, Remaining: []api.DrainRemaining{}}
	if _, err := st.UpdateHost(ctx, host, func(h *api.Host) error { h.Cordoned = true; return nil }); err != nil {
		return rep, err
	}
	insts, _, err := st.ListAllInstances(ctx)
	if err != nil {
		return rep, err
	}
	msg := fmt.Sprintf("host %s is being drained; re-creating the instance on another host", host)
	for i := range insts {
		in := &insts[i]
		if in.Status.Host != host || in.Status.Phase.Terminal() {
			continue
		}
		id := in.Tenant + "/" + in.Name
		why := ""
		_, err := st.UpdateInstance(tenant.WithName(ctx, in.Tenant), in.Name, func(cur *api.Instance) error {
			if cur.Status.Host != host || cur.Status.Phase.Terminal() {
				return errSkip
			}
			switch {
			case cur.DeletionRequested:
				why = "being deleted; the host removes it"
			case cur.StopRequested:
				why = "stopped; it will not run again"
			case !restartable(cur):
				why = fmt.Sprintf("restart policy %s: it would not run again elsewhere; stop or remove it", cur.Spec.RestartPolicy)
			}
			if why != "" {
				return errSkip
			}
			Recreate(cur, ReasonDrained, msg, now.UTC())
			return nil
		})
		switch {
		case err == nil:
			rep.Moved = append(rep.Moved, id)
		case errors.Is(err, errSkip):
			if why != "" {
				rep.Remaining = append(rep.Remaining, api.DrainRemaining{Instance: id, Reason: why})
			}
		case errors.Is(err, errdefs.ErrNotFound):
		default:
			return rep, err
		}
	}
	return rep, nil
}
