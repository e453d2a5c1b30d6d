package agent

import (
	"context"
	"time"

	"github.com/kanga-run/kanga/api"
)

// Image reporting: the host tells the control plane which images it holds
// (per tenant, hot ones first, at most api.MaxHostImages) so that the
// scheduler places an instance where its image already is. The list goes
// with every registration and again, debounced, whenever it changes.
//
// Nothing evicts images on its own: an image stays on the host until a
// tenant removes it (kanga image rm), and its content and snapshots then
// go through containerd's garbage collector. Hot images are therefore kept
// simply because nothing takes them away; the cap only bounds what is
// reported.

// imageReportDelay gathers the changes of a burst (an import of several
// images, the first starts of a deployment) into one report.
const imageReportDelay = 500 * time.Millisecond

// imageReportRetry is how long a failed report waits before it is tried
// again (the control plane may be restarting; the next registration also
// carries the list).
const imageReportRetry = 5 * time.Second

// HostImages lists the images this host holds for all tenants, for the
// host record (see image.Service.HostImages).
func (a *Agent) HostImages(ctx context.Context) ([]api.HostImage, error) {
	return a.cfg.Images.HostImages(a.ns(ctx), 0)
}

// ReportImages calls report with the host's images whenever they change,
// at most once per imageReportDelay, until ctx ends. A failed report is
// retried after imageReportRetry with the list as it is then.
func (a *Agent) ReportImages(ctx context.Context, report func(context.Context, []api.HostImage) error) {
	changed := a.cfg.Images.Changed()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(imageReportDelay):
			}
			imgs, err := a.HostImages(ctx)
			if err == nil {
				err = report(ctx, imgs)
			}
			if err == nil || ctx.Err() != nil {
				break
			}
			a.log.Warn("reporting the host's images failed; retrying", "err", err, "retry_in", imageReportRetry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(imageReportRetry):
			}
		}
	}
}
