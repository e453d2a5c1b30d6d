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
	// ConfigMount, if set, names a config of the tenant: the Kanga path
	// is then measured a second time, in the same run, with the config
	// mounted as files (PathKangaConfig).
	ConfigMount string
	// Storage, if set, adds a Kanga path whose instances have it (an
	// emptyDir, a writable-layer cap), run interleaved with the plain one.
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
	starters = append(starters, &KangaStarter{API: cfg.API, Image: cfg.Image, Runtime: cfg.Runtime, Command: args, Security: cfg.Security})
	if cfg.ConfigMount != "" {
		starters = append(starters, &KangaStarter{API: cfg.API, Image: cfg.Image, Runtime: cfg.Runtime, Command: args, Security: cfg.Security,
			ConfigMount: cfg.ConfigMount})
	}
	if cfg.Storage != nil {
		starters = append(starters, &KangaStarter{API: cfg.API, Image: cfg.Image, Runtime: cfg.Runtime, Command: args, Security: cfg.Security,
			Storage: cfg.Storage, PathName: cfg.Storage.Name()})
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
	// The Kanga paths come first; with a config mount or storage there
	// are several, run interleaved (runInterleaved), as one step of this
	// loop.
	nKanga := 1
	if cfg.ConfigMount != "" {
		nKanga++
	}
	if cfg.Storage != nil {
		nKanga++
	}
	steps := [][]Starter{starters[:nKanga]}
	for _, s := range starters[nKanga:] {
		steps = append(steps, []Starter{s})
	}
	var results []Result
	var errs []error
	for _, step := range steps {
		if ctx.Err() != nil {
			break
		}
		if len(step) > 1 {
			res, err := runInterleaved(ctx, step, cfg, prefix)
			results = append(results, res...)
			errs = append(errs, err...)
		} else {
			res, err := Run(ctx, step[0], Options{
				N: cfg.N, Concurrency: cfg.Concurrency, Timeout: cfg.Timeout,
				Prefix: prefix, Logger: cfg.Logger,
			})
			results = append(results, res)
			if err != nil {
				errs = append(errs, err)
			}
		}
		if _, ok := step[0].(*KangaStarter); ok && cc != nil {
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

// runInterleaved runs starters in rounds of one batch (Concurrency
// starts) each, taking turns, so that every path sees the same
// conditions: a platform's first starts, caches filling, what else runs
// on the machine. Run one after the other, whichever came first paid for
// all of that (measured: 3x its p50 at n=20 on a busy 2-core machine).
// Each round's instances are removed before the next round.
func runInterleaved(ctx context.Context, starters []Starter, cfg Config, prefix string) ([]Result, []error) {
	batch := max(cfg.Concurrency, 1)
	out := make([]Result, len(starters))
	for i, s := range starters {
		out[i] = Result{Path: s.Path()}
	}
	var errs []error
	for round, done := 0, 0; done < cfg.N && ctx.Err() == nil; round, done = round+1, done+batch {
		n := min(batch, cfg.N-done)
		for i, s := range starters {
			res, err := Run(ctx, s, Options{
				N: n, Concurrency: cfg.Concurrency, Timeout: cfg.Timeout,
				Prefix: fmt.Sprintf("%s%c%d-", prefix, 'a'+i, round), Logger: cfg.Logger,
			})
			out[i].N += res.N
			out[i].Samples = append(out[i].Samples, res.Samples...)
			out[i].Errors = append(out[i].Errors, res.Errors...)
			out[i].Wall += res.Wall
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return out, errs
}
