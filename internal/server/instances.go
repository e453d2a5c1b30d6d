package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/httpserver"
	"github.com/kanga-run/kanga/internal/httpstream"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/yaml")
	_, err := w.Write(api.OpenAPI)
	return err
}

func (s *Server) getVersion(w http.ResponseWriter, r *http.Request) error {
	t, err := tenant.Name(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Version{Version: s.version, Tenant: t})
	return nil
}

func (s *Server) createInstance(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	var req api.CreateInstanceRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	setAuditObject(ctx, "instances/"+req.Name)
	spec := req.Spec
	// The image check (a round trip to a host per image) and the tenant's
	// policy (an etcd read) do not depend on each other: ask both at once.
	// Its result is only looked at after the input checks below, so
	// errors come in the same order as when they ran one after the other.
	images := make(chan error, 1)
	// model.Defaults below fills in the containers: check copies.
	imgSpec := api.InstanceSpec{Containers: slices.Clone(spec.Containers), InitContainers: slices.Clone(spec.InitContainers)}
	go func() { images <- s.checkImages(ctx, &imgSpec) }()
	policy, err := s.tenantPolicy(ctx, t)
	if err != nil {
		return err
	}
	defaultType := s.defaultType
	if policy.DefaultInstanceType != "" {
		defaultType = policy.DefaultInstanceType
	}
	model.ApplyDefaultType(&spec, defaultType)
	model.Defaults(&spec, policy.DefaultRuntime)
	if spec.SchedulingPolicy == "" {
		spec.SchedulingPolicy = policy.SchedulingPolicy
	}
	if err := errors.Join(model.Validate(&spec),
		model.ValidateLabels("labels", req.Labels),
		model.ValidateAnnotations("annotations", req.Annotations)); err != nil {
		return err
	}
	if err := s.checkFits(&spec); err != nil {
		return err
	}
	if len(policy.AllowedRuntimes) > 0 && !slices.Contains(policy.AllowedRuntimes, spec.Runtime) {
		return fmt.Errorf("spec.runtime: tenant %q may not use runtime class %s: it may use %s: %w",
			t, spec.Runtime, strings.Join(policy.AllowedRuntimes, ", "), errdefs.ErrPermissionDenied)
	}
	if err := s.checkPortPolicy(&spec, policy); err != nil {
		return err
	}
	if err := model.CheckSecurity(&spec, t, policy.Security, s.security); err != nil {
		return err
	}
	if changed, err := s.resolveObjectRefs(ctx, &spec); err != nil {
		return err
	} else if changed {
		// Env from configs is resolved now: hold it to the caps again.
		if err := model.Validate(&spec); err != nil {
			return err
		}
	}
	bound, err := s.bindVolumes(ctx, &spec)
	if err != nil {
		return err
	}
	name := req.Name
	if name == "" && len(spec.Containers) > 0 {
		name = model.GenerateName(spec.Containers[0].Image)
	}
	if err := model.ValidateName("name", name); err != nil {
		return err
	}
	// Past the checks of the request itself, so that a bad one gets its
	// 4xx rather than a 429 to retry.
	release, err := s.admission.acquire(ctx)
	if err != nil {
		return err
	}
	recorded := false
	defer func() {
		if !recorded {
			release()
		}
	}()
	now := s.now().UTC()
	inst := &api.Instance{
		Name:        name,
		Tenant:      t,
		UID:         model.NewUID(),
		CreatedAt:   now,
		Labels:      req.Labels,
		Annotations: req.Annotations,
		Spec:        spec,
		Status:      api.InstanceStatus{Phase: api.PhasePending},
		// The instance runs on its volumes' host (the scheduler reads it).
		PersistentVolumes: bound,
	}
	// Stored Pending without a host: the control plane's scheduler loop
	// places it (internal/controlplane). The watch for its decision starts
	// first, so that the decision is seen the moment it is written; it is
	// set up while the image check is still under way.
	wctx, cancel := context.WithTimeout(ctx, s.scheduleWait)
	defer cancel()
	watch := make(chan (<-chan *api.Instance), 1)
	if s.scheduleWait > 0 {
		go func() {
			decisions, err := s.store.WatchInstance(wctx, name)
			if err != nil && wctx.Err() == nil {
				s.log.Warn("cannot watch a new instance for its placement", "instance", name, "err", err)
			}
			watch <- decisions
		}()
	} else {
		watch <- nil
	}
	// Check images before anything is stored, so bad input leaves nothing
	// behind.
	if err := <-images; err != nil {
		return err
	}
	decisions := <-watch
	var opts []store.CreateOption
	if policy.Quota != nil {
		limits, err := s.quotaLimits(policy.Quota)
		if err != nil {
			return err
		}
		opts = append(opts, store.WithQuota(limits))
	}
	// One instance at a time on a volume: claimed before the instance is
	// stored, so that of two creates on a free volume one gets a 409.
	confirmVolumes, releaseVolumes, err := s.claimVolumes(ctx, inst)
	if err != nil {
		return err
	}
	unlock, err := s.admitPorts(ctx, t, &spec)
	if err != nil {
		releaseVolumes()
		return err
	}
	err = s.store.CreateInstance(ctx, inst, opts...)
	unlock()
	if err != nil {
		releaseVolumes()
		return err
	}
	confirmVolumes()
	recorded = true
	go s.holdAdmission(ctx, name, inst.UID, release)
	writeJSON(w, http.StatusCreated, scheduled(inst, decisions))
	return nil
}

// checkImages makes sure every container's image is on a host (or can
// be pulled by one) and gives the container something to run.
func (s *Server) checkImages(ctx context.Context, spec *api.InstanceSpec) error {
	for _, sc := range model.AllContainers(spec) {
		c := sc.Spec
		cfg, err := s.imageConfig(ctx, c.Image)
		if err != nil {
			return fmt.Errorf("%s.image: %w", sc.Field, err)
		}
		if len(c.Command) == 0 && len(c.Args) == 0 && len(cfg.Entrypoint) == 0 && len(cfg.Cmd) == 0 {
			return fmt.Errorf("%s: image %q has no entrypoint or cmd, so there is nothing to run: give a command, e.g. kanga run %s sh -c '...': %w", sc.Field, c.Image, c.Image, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// scheduled returns the scheduler's decision on a new instance (a host,
// or the reason it has none) as it arrives on decisions, or inst as
// stored when none arrives in time (no control-plane leader just now).
// The decision comes within milliseconds and is on the way to the
// instance's start anyway; answering with it lets `kanga run` report at
// once an instance that cannot run.
func scheduled(inst *api.Instance, decisions <-chan *api.Instance) *api.Instance {
	if decisions == nil {
		return inst
	}
	for got := range decisions {
		if got.UID != inst.UID {
			break
		}
		if got.Status.Host != "" || got.Status.Reason != "" || got.Status.Phase != api.PhasePending {
			return got
		}
	}
	return inst
}

func (s *Server) getInstance(w http.ResponseWriter, r *http.Request) error {
	inst, err := s.store.GetInstance(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, inst)
	return nil
}

func (s *Server) deleteInstance(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name := r.PathValue("name")
	force, err := httpstream.BoolParam(r, "force")
	if err != nil {
		return err
	}
	placed := true
	_, err = s.store.UpdateInstance(ctx, name, func(inst *api.Instance) error {
		placed = inst.Status.Host != ""
		if !force && (inst.Status.Phase == api.PhaseRunning || inst.Status.Phase == api.PhaseCreating) && !inst.StopRequested {
			return fmt.Errorf("instance %q is %s: stop it first with 'kanga stop %s' or remove it anyway with 'kanga rm -f %s': %w",
				name, inst.Status.Phase, name, name, errdefs.ErrFailedPrecondition)
		}
		inst.StopRequested = true
		inst.DeletionRequested = true
		return nil
	})
	if err != nil {
		return err
	}
	if !placed {
		// No host ever had it: nothing to tear down.
		if err := s.store.DeleteInstance(ctx, name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.waitTimeout)
	defer cancel()
	if err := s.store.WaitInstanceGone(wctx, name); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// The host has not torn it down yet (it may be down itself);
			// the deletion stays recorded and completes when it returns.
			inst, gerr := s.store.GetInstance(ctx, name)
			if errors.Is(gerr, errdefs.ErrNotFound) {
				w.WriteHeader(http.StatusNoContent) // removed just now
				return nil
			}
			if gerr != nil {
				return gerr
			}
			writeJSON(w, http.StatusAccepted, inst)
			return nil
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) stopInstance(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name := r.PathValue("name")
	grace := -1 // the spec's
	if v := r.URL.Query().Get("timeout"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > model.MaxStopGrace {
			return fmt.Errorf("query parameter timeout=%q must be a number of seconds between 0 and %d: %w", v, model.MaxStopGrace, errdefs.ErrInvalidArgument)
		}
		grace = n
	}
	inst, err := s.store.UpdateInstance(ctx, name, func(inst *api.Instance) error {
		if inst.Status.Phase.Terminal() {
			return nil
		}
		if grace < 0 {
			grace = model.StopGrace(&inst.Spec)
		}
		inst.StopRequested = true
		inst.Status.Events = model.AppendEvent(inst.Status.Events, api.Event{Time: s.now().UTC(), Type: "Normal", Reason: "Stopping",
			Message: fmt.Sprintf("stop requested with a %ds grace period", grace)})
		// Repeated stops keep the shortest grace period.
		if inst.StopGraceSeconds == nil || grace < *inst.StopGraceSeconds {
			inst.StopGraceSeconds = &grace
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !inst.Status.Phase.Terminal() {
		wctx, cancel := context.WithTimeout(ctx, time.Duration(grace)*time.Second+s.waitTimeout)
		defer cancel()
		inst, err = s.store.WaitInstance(wctx, name, func(i *api.Instance) bool { return i.Status.Phase.Terminal() })
		if err != nil {
			return waitError(ctx, err, name, "stopped")
		}
	}
	writeJSON(w, http.StatusOK, inst)
	return nil
}

// unschedulable reports an instance that waits for resources
// (Unschedulable, Insufficient<Resource>: api.WaitsForResources). It
// stays Pending, with the reason, until that changes.
func unschedulable(i *api.Instance) bool {
	return i.Status.Phase == api.PhasePending && api.WaitsForResources(i.Status.Reason)
}

// waitError explains a wait that ran out of time; the request's own
// cancellation passes through unchanged.
func waitError(ctx context.Context, err error, name, what string) error {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		if what == "" {
			what = "terminal"
		}
		return fmt.Errorf("instance %q is not %s yet: repeat the request to keep waiting: %w", name, what, err)
	}
	return err
}

func (s *Server) waitInstance(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var cond func(*api.Instance) bool
	switch c := r.URL.Query().Get("condition"); c {
	case "", "terminal":
		cond = func(i *api.Instance) bool { return i.Status.Phase.Terminal() }
	case "running":
		// An instance no host can run will not get further until one
		// can; waiting for it would only time out. Nor will one whose
		// init container fails and waits to be run again, until it
		// stops failing.
		cond = func(i *api.Instance) bool {
			return i.Status.Phase == api.PhaseRunning || i.Status.Phase.Terminal() || unschedulable(i) ||
				i.Status.Reason == model.ReasonInitCrashLoop
		}
	default:
		return fmt.Errorf("query parameter condition=%q is not one of running, terminal: %w", c, errdefs.ErrInvalidArgument)
	}
	wctx, cancel := context.WithTimeout(ctx, s.waitTimeout)
	defer cancel()
	inst, err := s.store.WaitInstance(wctx, r.PathValue("name"), cond)
	if err != nil {
		return waitError(ctx, err, r.PathValue("name"), r.URL.Query().Get("condition"))
	}
	writeJSON(w, http.StatusOK, inst)
	return nil
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	follow, err := httpstream.BoolParam(r, "follow")
	if err != nil {
		return err
	}
	previous, err := httpstream.BoolParam(r, "previous")
	if err != nil {
		return err
	}
	inst, err := s.store.GetInstance(ctx, r.PathValue("name"))
	if err != nil {
		return err
	}
	container, err := httpstream.PickContainer(inst, r.URL.Query().Get("container"))
	if err != nil {
		return err
	}
	host, err := s.hostOf(inst)
	if err != nil {
		return err
	}
	if previous {
		return s.previousLogs(w, r, host, inst, container)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if err := host.Logs(ctx, inst, container, follow, newFlushWriter(w, r)); err != nil && ctx.Err() == nil {
		// The status line is gone; the best we can do is say so in-band.
		s.log.Warn("logs ended with an error", "instance", inst.Name, "err", err)
		fmt.Fprintf(w, "\nkanga: logs ended: %v\n", err)
	}
	return nil
}

// previousLogs serves ?previous=true. The previous run has ended, so
// follow has nothing to wait for and is ignored, as kubectl does.
func (s *Server) previousLogs(w http.ResponseWriter, r *http.Request, host hostcontract.Host, inst *api.Instance, container string) error {
	pl, ok := host.(hostcontract.PreviousLogger)
	if !ok {
		return fmt.Errorf("logs of a previous run of instance %q: this host keeps one log per container; drop previous=true: %w", inst.Name, errdefs.ErrNotImplemented)
	}
	rc, err := pl.PreviousLogs(r.Context(), inst, container)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		s.log.Warn("previous logs ended with an error", "instance", inst.Name, "err", err)
		fmt.Fprintf(w, "\nkanga: logs ended: %v\n", err)
	}
	return nil
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.listAllImages(r.Context())
	if err != nil {
		return err
	}
	if imgs == nil {
		imgs = []api.Image{}
	}
	writeJSON(w, http.StatusOK, api.ImageList{Items: imgs})
	return nil
}

func (s *Server) importImage(w http.ResponseWriter, r *http.Request) error {
	// Progress is written while the archive is still being read; without
	// full duplex net/http discards or closes the unread body at the first
	// write.
	_ = http.NewResponseController(w).EnableFullDuplex()
	httpserver.StreamBody(r)
	ps := httpstream.NewProgress(w, newFlushWriter(w, r))
	imgs, err := s.importAll(r.Context(), r.Body, ps.Send)
	httpserver.FinishBody(r)
	if err != nil {
		return ps.Fail(err)
	}
	ps.Done(api.Progress{Status: "imported", Done: true, Images: imgs})
	return nil
}

func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) error {
	var req api.PullRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	setAuditObject(r.Context(), "images/"+req.Ref)
	if req.Ref == "" {
		return fmt.Errorf("ref is empty: name the image to pull, e.g. 127.0.0.1:5000/busybox:latest: %w", errdefs.ErrInvalidArgument)
	}
	ps := httpstream.NewProgress(w, newFlushWriter(w, r))
	img, err := s.pullAll(r.Context(), req.Ref, ps.Send)
	if err != nil {
		return ps.Fail(err)
	}
	ps.Done(api.Progress{Status: "pulled", Done: true, Images: []api.Image{img}})
	return nil
}
