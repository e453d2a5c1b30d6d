package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/distribution/reference"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/image"
)

// DefaultContainerd is the socket of the containerd that `kanga up`
// supervises with the default data dir.
const DefaultContainerd = "/var/lib/kanga/containerd/containerd.sock"

// DefaultCommand keeps the container running, so that "running" is a
// stable state to wait for.
var DefaultCommand = []string{"sleep", "3600"}

// runtimeBinaries maps runtime classes to the OCI runtime they run, as the
// agent's runtime classes do.
var runtimeBinaries = map[string][]string{
	"runc":   {"runc"},
	"crun":   {"crun"},
	"gvisor": {"runsc", "/usr/local/bin/runsc"},
}

// RuntimeBinary returns the path of the OCI runtime of a runtime class.
func RuntimeBinary(class string) (string, error) {
	cands, ok := runtimeBinaries[class]
	if !ok {
		return "", fmt.Errorf("runtime class %q has no OCI runtime binary to compare with; use runc, crun or gvisor: %w", class, errdefs.ErrInvalidArgument)
	}
	for _, c := range cands {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("runtime class %s needs %s, which is not installed: %w", class, cands[0], errdefs.ErrFailedPrecondition)
}

// Config is one benchmark invocation.
type Config struct {
	N           int
	Concurrency int
	// Runtime is the runtime class: runc, crun or gvisor.
	Runtime string
	Image   string
	// Command is the container's process; nil means DefaultCommand.
	Command []string
	// Security is the Kanga path's container security context (the
	// baselines run containerd's default spec).
	Security *api.SecurityContext
	// Storage, if set, adds a second Kanga path whose instances have it
	// (an emptyDir, a writable-layer cap), run right after the plain one.
	Storage *Storage
	// API is the platform's API (a *client.Client).
	API InstanceAPI
	// Baseline also runs the containerd client and raw runtime paths,
	// against the containerd at Containerd.
	Baseline   bool
	Containerd string
	// Tenant is the tenant whose image record the baselines start (the
	// --tenant an administrator acts in); "" means the one tenant whose
	// record of Image holds the content, see baselineRecord.
	Tenant string
	// Timeout bounds each start; 0 means 2 minutes.
	Timeout time.Duration
	// TempDir holds the baselines' work directories; "" means os.TempDir().
	TempDir string
	Logger  *slog.Logger
}

// RunSuite runs the Kanga path and, with Baseline, the containerd client
// and raw runtime paths, one after the other with the same n and
// concurrency, and reports them with ratios to the raw runtime's p50. The
// report is valid even when an error (a cleanup failure) is returned.
func RunSuite(ctx context.Context, cfg Config) (Report, error) {
	rep := Report{Runtime: cfg.Runtime, Image: cfg.Image, N: cfg.N, Concurrency: max(cfg.Concurrency, 1), Date: time.Now().UTC()}
	if cfg.N < 1 {
		return rep, fmt.Errorf("--n must be at least 1: %w", errdefs.ErrInvalidArgument)
	}
	args := cfg.Command
	if len(args) == 0 {
		args = DefaultCommand
	}
	var (
		starters []Starter
		cc       *containerd.Client
	)
	plain := &KangaStarter{API: cfg.API, Image: cfg.Image, Runtime: cfg.Runtime, Command: args, Security: cfg.Security}
	var withStorage *KangaStarter
	if cfg.Storage != nil {
		withStorage = &KangaStarter{API: cfg.API, Image: cfg.Image, Runtime: cfg.Runtime, Command: args, Security: cfg.Security,
			Storage: cfg.Storage, PathName: cfg.Storage.Name()}
	} else {
		starters = append(starters, plain)
	}

	if cfg.Baseline {
		// The baselines look images up in Kanga's containerd namespace;
		// the Kanga path ignores it.
		ctx = namespaces.WithNamespace(ctx, Namespace)
		bin, err := RuntimeBinary(cfg.Runtime)
		if err != nil {
			return rep, err
		}
		named, err := reference.ParseDockerRef(cfg.Image)
		if err != nil {
			return rep, fmt.Errorf("image %q: %v: %w", cfg.Image, err, errdefs.ErrInvalidArgument)
		}
		cc, err = containerd.New(cfg.Containerd, containerd.WithTimeout(10*time.Second))
		if err != nil {
			return rep, fmt.Errorf("connecting to containerd at %s (set --containerd to the socket of kanga up's containerd, <data-dir>/containerd/containerd.sock): %w: %w", cfg.Containerd, errdefs.ErrUnavailable, err)
		}
		defer cc.Close()
		record, err := baselineRecord(ctx, cc, cfg.Tenant, named.String())
		if err != nil {
			return rep, err
		}
		starters = append(starters,
			&ContainerdStarter{Client: cc, Image: record, Binary: bin, Args: args, TempDir: cfg.TempDir},
			&RawStarter{Runtime: cfg.Runtime, Binary: bin, Args: args, TempDir: cfg.TempDir,
				Rootfs: func(ctx context.Context, dir string) ([]oci.SpecOpts, error) {
					img, err := cc.GetImage(ctx, record)
					if err != nil {
						return nil, fmt.Errorf("looking up image %s in containerd namespace %s: %w", record, Namespace, err)
					}
					if err := UnpackImage(ctx, cc.ContentStore(), img.Target(), dir); err != nil {
						return nil, err
					}
					return []oci.SpecOpts{oci.WithImageConfig(img)}, nil
				}},
		)
		rep.Baseline = "raw " + cfg.Runtime
	}

	prefix := "bench-" + randomHex(3) + "-"
	rep.IDPrefix = prefix
	var results []Result
	var errs []error
	if withStorage != nil {
		// The plain and the storage paths alternate in rounds, so that
		// the load of a busy machine weighs on both alike.
		ra, rb, err := runAlternating(ctx, plain, withStorage, storageRound, Options{
			N: cfg.N, Concurrency: cfg.Concurrency, Timeout: cfg.Timeout, Prefix: prefix, Logger: cfg.Logger,
		})
		results = append(results, ra, rb)
		if err != nil {
			errs = append(errs, err)
		}
		if cc != nil {
			if left := kangaLeftovers(ctx, cc, prefix); len(left) > 0 {
				errs = append(errs, fmt.Errorf("%s: the deleted instances left %d containers in containerd namespace %s (%s...): the host did not tear them down: %w",
					PathKanga, len(left), Namespace, left[0], errdefs.ErrFailedPrecondition))
			}
		}
	}
	for _, s := range starters {
		if ctx.Err() != nil {
			break
		}
		res, err := Run(ctx, s, Options{
			N: cfg.N, Concurrency: cfg.Concurrency, Timeout: cfg.Timeout,
			Prefix: prefix, Logger: cfg.Logger,
		})
		results = append(results, res)
		if err != nil {
			errs = append(errs, err)
		}
		if _, ok := s.(*KangaStarter); ok && cc != nil {
			// The API reports an instance deleted once the record is gone;
			// check that the host really removed its containers too.
			if left := kangaLeftovers(ctx, cc, prefix); len(left) > 0 {
				errs = append(errs, fmt.Errorf("%s: the deleted instances left %d containers in containerd namespace %s (%s...): the host did not tear them down: %w",
					PathKanga, len(left), Namespace, left[0], errdefs.ErrFailedPrecondition))
			}
		}
	}
	rep.Paths = Summarize(results, rep.Baseline)
	return rep, errors.Join(errs...)
}

// labelInstance is the agent's label naming a container's instance.
const labelInstance = "kanga.dev/instance"

// leftoverGrace is how long a host may take to finish a teardown that the
// API answered before it was done (202 Accepted).
const leftoverGrace = 10 * time.Second

// kangaLeftovers returns the ids of containers in Namespace that belong to
// instances named with prefix, after giving the host leftoverGrace to
// remove them.
func kangaLeftovers(ctx context.Context, cc *containerd.Client, prefix string) []string {
	ctx = namespaces.WithNamespace(context.WithoutCancel(ctx), Namespace)
	filter := fmt.Sprintf("labels.%q~=%q", labelInstance, "^"+regexp.QuoteMeta(prefix))
	deadline := time.Now().Add(leftoverGrace)
	for {
		ctrs, err := cc.Containers(ctx, filter)
		if err != nil {
			return nil // cannot tell; the cleanup itself succeeded
		}
		if len(ctrs) == 0 || time.Now().After(deadline) {
			ids := make([]string, len(ctrs))
			for i, c := range ctrs {
				ids[i] = c.ID()
			}
			return ids
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// baselineRecord names the containerd image record the baselines start:
// each tenant holds its own record of an image name on a host
// (image.RecordName), so the name alone is not a record. With tenant set
// it is that tenant's; without, the records of name must all hold the same
// content (one tenant's, or the same image imported by several), or the
// caller has to say whose.
func baselineRecord(ctx context.Context, cc *containerd.Client, tenant, name string) (string, error) {
	if tenant != "" {
		return image.RecordName(tenant, name), nil
	}
	recs, err := cc.ImageService().List(ctx)
	if err != nil {
		return "", fmt.Errorf("listing the images in containerd namespace %s: %w", Namespace, err)
	}
	var found, digest string
	for _, r := range recs {
		if _, n, ok := image.ParseRecordName(r.Name); !ok || n != name {
			continue
		}
		if found != "" && r.Target.Digest.String() != digest {
			return "", fmt.Errorf("tenants hold different images named %s on this host; say whose the baselines start with --tenant: %w", name, errdefs.ErrFailedPrecondition)
		}
		found, digest = r.Name, r.Target.Digest.String()
	}
	if found == "" {
		return "", fmt.Errorf("no tenant holds image %s in containerd namespace %s: import it with `kanga image import`: %w", name, Namespace, errdefs.ErrNotFound)
	}
	return found, nil
}

// storageRound is how many starts each path makes in turn when the plain
// and the storage paths alternate.
const storageRound = 5

// runAlternating runs a and b in turns of round starts each (a first)
// until each has made o.N, and merges each one's results. Each turn is a
// Run of its own (its workloads removed before the next turn), with ids
// o.Prefix + "t<turn>a-" + i for a and "t<turn>b-" for b.
func runAlternating(ctx context.Context, a, b Starter, round int, o Options) (Result, Result, error) {
	ra, rb := Result{Path: a.Path()}, Result{Path: b.Path()}
	var errs []error
	for turn := 0; ra.N < o.N && ctx.Err() == nil; turn++ {
		k := min(round, o.N-ra.N)
		for j, x := range []struct {
			s   Starter
			res *Result
		}{{a, &ra}, {b, &rb}} {
			to := o
			to.N, to.Prefix = k, fmt.Sprintf("%st%d%c-", o.Prefix, turn, 'a'+j)
			res, err := Run(ctx, x.s, to)
			x.res.N += res.N
			x.res.Samples = append(x.res.Samples, res.Samples...)
			x.res.Errors = append(x.res.Errors, res.Errors...)
			x.res.Wall += res.Wall
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return ra, rb, errors.Join(errs...)
}
