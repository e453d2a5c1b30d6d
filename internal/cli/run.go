package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/virtualnode"
)

// runExitCode is docker's code for a failure of `run` itself, as opposed to
// the container's own exit code.
const runExitCode = errorExitCode

type runFlags struct {
	detach     bool
	rm         bool
	name       string
	env        []string
	envFiles   []string
	cpu        string
	memory     string
	restart    string
	runtime    string
	ports      []string
	workdir    string
	entrypoint string
	file       string

	cpuPolicy        string
	pids             int64
	diskReadBPS      string
	diskWriteBPS     string
	diskReadIOPS     int64
	diskWriteIOPS    int64
	bandwidth        string
	ingressBandwidth string
	egressBandwidth  string
	hostSelector     []string
	schedulingPolicy string
	instanceType     string
	cpuLimit         string
	logSize          string
	logFiles         int
	capAdd           []string
	capDrop          []string
	securityOpts     []string
	user             string
	readOnly         bool
	labels           []string
	annotations      []string
	// Secrets and configs as files and env (objects.go).
	secrets, configs, envFromSecrets, envFromConfigs []string
	// Storage (volumes.go; -v of a persistent volume: volume.go).
	tmpfs, volumes []string
	disk           string
	// Host devices by CDI kind or name (devices.go).
	devices []string
	// Docker's --health-* flags (health.go).
	health healthFlags
}

func newRunCommand(o *options) *cobra.Command {
	cmd, _ := runCommandWithFlags(o)
	return cmd
}

// runCommandWithFlags returns the run command and the flags it binds.
func runCommandWithFlags(o *options) (*cobra.Command, *runFlags) {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create and start an instance",
		Long: `Create and start an instance.

Without -d, run streams the instance's logs until it ends and exits with the
exit code of the first container that failed. With -f, the instance comes from
a file ("-" reads stdin), JSON or YAML: an api.CreateInstanceRequest, for
multi-container instances, or a Kubernetes v1 Pod manifest, mapped as the
virtual node maps pods (ConfigMap and Secret references name your configs and
secrets); --name and the instance-wide flags (--cpu, --memory, --restart,
--runtime, -p) override it.`,
		Example: `  kanga run --rm busybox echo hello
  kanga run -d --name web -p 8080:80 --memory 128Mi busybox httpd -f -p 80
  kanga run -f instance.json
  kanga run -d -f pod.yaml
  kanga run --tmpfs /scratch:size=64Mi --disk 1Gi busybox sh -c 'df -h /scratch /'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := runRun(cmd, o, f, args)
			var ee *ExitError
			if err != nil && !errors.As(err, &ee) {
				return &ExitError{Code: runExitCode, Err: err}
			}
			return err
		},
	}
	// Everything after IMAGE belongs to the container's command.
	cmd.Flags().SetInterspersed(false)
	// Deferred: registered after all of run's own flags, so that a clash
	// with one of them panics at once.
	defer refuseFlags(cmd, refusedRunFlags)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &ExitError{Code: runExitCode, Err: fmt.Errorf("%w\nSee '%s --help'.", err, c.CommandPath())}
	})
	fl := cmd.Flags()
	fl.BoolVarP(&f.detach, "detach", "d", false, "run in the background and print the instance name")
	fl.BoolVar(&f.rm, "rm", false, "remove the instance when it ends (with -d the platform removes it: spec.autoRemove)")
	fl.StringVar(&f.name, "name", "", "instance name (default: chosen by the server)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable: KEY=VALUE, or KEY to copy it from your environment")
	fl.StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from a file of KEY=VALUE lines (# comments; KEY alone copies it from your environment; -e wins)")
	fl.StringVar(&f.cpu, "cpu", "", `CPU limit, e.g. "0.5" or "500m"`)
	fl.StringVar(&f.memory, "memory", "", `memory limit, e.g. "256Mi" or "1G"`)
	fl.StringVar(&f.restart, "restart", "", "restart policy: no, on-failure or always (default no)")
	fl.StringVar(&f.runtime, "runtime", "", "runtime class: runc, crun, gvisor (see kanga runtimes)")
	fl.StringVar(&f.cpuPolicy, "cpu-policy", "", "shared (CFS quota, the default) or dedicated (whole cores of its own)")
	fl.Int64Var(&f.pids, "pids", 0, "maximum number of processes and threads")
	fl.StringVar(&f.diskReadBPS, "disk-read-bps", "", `disk read limit in bytes per second, e.g. "10Mi"`)
	fl.StringVar(&f.diskWriteBPS, "disk-write-bps", "", `disk write limit in bytes per second, e.g. "10Mi"`)
	fl.Int64Var(&f.diskReadIOPS, "disk-read-iops", 0, "disk read operations per second")
	fl.Int64Var(&f.diskWriteIOPS, "disk-write-iops", 0, "disk write operations per second")
	fl.StringVar(&f.bandwidth, "bandwidth", "", `network bandwidth each way in bits per second, e.g. "5M" or "100Mbit"`)
	fl.StringVar(&f.ingressBandwidth, "ingress-bandwidth", "", "bandwidth into the instance (overrides --bandwidth)")
	fl.StringVar(&f.egressBandwidth, "egress-bandwidth", "", "bandwidth out of the instance (overrides --bandwidth)")
	fl.StringArrayVar(&f.hostSelector, "host-selector", nil, "run only on hosts with this label: KEY=VALUE, e.g. zone=a (repeatable)")
	fl.StringVar(&f.schedulingPolicy, "scheduling-policy", "", "binpack (fill busy hosts first, the default) or spread (least loaded host)")
	fl.StringVar(&f.instanceType, "type", "", "instance type whose resources fill in the rest (default: the platform's or your tenant's default type; see kanga types)")
	fl.StringVar(&f.cpuLimit, "cpu-limit", "", `cap on CPU use above --cpu (or without reserving any), e.g. "2"`)
	fl.StringVar(&f.logSize, "log-size", "", `size at which each container's log is rotated, e.g. "50Mi" (at most 100Mi)`)
	fl.IntVar(&f.logFiles, "log-files", 0, "log files kept per container, the current one included (at most 5)")
	fl.StringArrayVarP(&f.ports, "publish", "p", nil, "publish a port: [IP:]HOSTPORT:PORT[/tcp|udp]")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory of the process")
	fl.StringVar(&f.entrypoint, "entrypoint", "", "override the image's entrypoint")
	fl.StringVarP(&f.file, "file", "f", "", `create the instance from a CreateInstanceRequest or a Kubernetes Pod manifest, JSON or YAML ("-" for stdin)`)
	fl.StringSliceVar(&f.capAdd, "cap-add", nil, "add Linux capabilities beyond the default set, e.g. NET_ADMIN (only those the tenant is allowed)")
	fl.StringSliceVar(&f.capDrop, "cap-drop", nil, "drop Linux capabilities from the default set, or ALL")
	fl.StringVarP(&f.user, "user", "u", "", "run the process as UID[:GID] (numeric; default: the image's USER)")
	fl.BoolVar(&f.readOnly, "read-only", false, "mount the container's root filesystem read-only (volumes, --tmpfs and /dev/shm stay writable)")
	fl.StringArrayVarP(&f.labels, "label", "l", nil, "set a label on the instance: KEY=VALUE (repeatable; select with kanga ps -l)")
	fl.StringArrayVar(&f.annotations, "annotation", nil, "set an annotation on the instance: KEY=VALUE (repeatable)")
	fl.StringArrayVar(&f.securityOpts, "security-opt", nil, "seccomp=unconfined runs without seccomp (only if the tenant is allowed); seccomp=runtime/default is the default")
	fl.StringArrayVar(&f.secrets, "secret", nil, "mount a secret read-only, each key a file: NAME:/DIR (repeatable)")
	// Not --config: that is every verb's client config file.
	fl.StringArrayVar(&f.configs, "config-mount", nil, "mount a config read-only, each key a file: NAME:/DIR (repeatable)")
	fl.StringArrayVar(&f.envFromSecrets, "env-from-secret", nil, "set a variable for every key of a secret (repeatable)")
	fl.StringArrayVar(&f.envFromConfigs, "env-from-config", nil, "set a variable for every key of a config (repeatable; -e wins)")
	fl.StringArrayVar(&f.tmpfs, "tmpfs", nil, "mount scratch space in memory, counted against --memory: /DIR[:size=64Mi] (default size: the memory limit; repeatable)")
	fl.StringArrayVarP(&f.volumes, "volume", "v", nil, "mount a volume in every container: NAME:/PATH[:ro], NAME a volume the -f file declares (an emptyDir) or else a persistent volume (kanga volume create); repeatable")
	fl.StringVar(&f.disk, "disk", "", `the instance's ephemeral storage, e.g. "10Gi": its containers' writable layers and disk emptyDirs without a sizeLimit together; writes past it fail with "No space left on device"`)
	fl.StringArrayVar(&f.devices, "device", nil, "host devices by Container Device Interface kind: KIND (one of the kind), KIND=N (N of the kind, e.g. nvidia.com/gpu=2) or KIND=NAME (that device, e.g. kanga.dev/mock=m0); repeatable. See kanga host inspect for a host's devices")
	f.health.register(fl)
	return cmd, f
}

func runRun(cmd *cobra.Command, o *options, f *runFlags, args []string) error {
	req, err := buildRunRequest(f, cmd.Flags().Changed, args, cmd.InOrStdin(), os.LookupEnv)
	if err != nil {
		return err
	}
	if f.detach && f.rm {
		// Nobody stays to remove it: the platform does, when it ends.
		// (Attached, the client removes it after reading its exit.)
		req.Spec.AutoRemove = true
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	inst, err := createReporting(ctx, c, req, stderr)
	if err != nil {
		return err
	}

	if f.detach {
		inst, err = c.WaitInstance(ctx, inst.Name, client.WaitRunning)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, inst.Name)
		if waiting(inst) {
			fmt.Fprintf(stderr, "kanga: %s is %s (%s): %s\n", inst.Name, inst.Status.Phase, inst.Status.Reason, inst.Status.Message)
			return nil
		}
		if _, ok := exitCode(inst.Status); inst.Status.Phase == api.PhaseFailed && !ok {
			return &ExitError{Code: runExitCode, Err: errors.New(failureText(inst))}
		}
		return nil
	}

	// A shortage of cores passes as instances end (and dedicated cores
	// free up): run waits for it. Any other reason to stay Pending is the
	// user's to resolve.
	if inst.Status.Phase == api.PhasePending && api.WaitsForResources(inst.Status.Reason) && inst.Status.Reason != api.ReasonInsufficientCPU {
		return &ExitError{Code: runExitCode, Err: fmt.Errorf("%s cannot start: %s; it stays Pending until a host can run it (remove it with kanga rm %s)",
			inst.Name, inst.Status.Message, inst.Name)}
	}
	inst, err = attach(ctx, c, inst.Name, stdout, stderr)
	if err != nil {
		return err
	}
	var result error
	if code, ok := exitCode(inst.Status); code != 0 {
		result = &ExitError{Code: code}
	} else if inst.Status.Phase == api.PhaseFailed && !ok {
		result = &ExitError{Code: runExitCode, Err: errors.New(failureText(inst))}
	}
	if f.rm {
		if err := c.DeleteInstance(ctx, inst.Name, true); err != nil {
			printError(stderr, fmt.Errorf("removing %s: %w", inst.Name, err))
		}
	}
	return result
}

// attach streams the logs of a new instance until it is terminal and
// returns it then. The first interrupt stops the instance (its exit is then
// reported as usual); a second one detaches.
func attach(ctx context.Context, c *client.Client, name string, stdout, stderr io.Writer) (api.Instance, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	detached := make(chan struct{})
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
			return
		}
		fmt.Fprintf(stderr, "Stopping %s (interrupt again to detach)\n", name)
		go func() {
			if _, err := c.StopInstance(ctx, name, -1); err != nil && ctx.Err() == nil {
				printError(stderr, fmt.Errorf("stopping %s: %w", name, err))
			}
		}()
		select {
		case <-sigs:
			close(detached)
			cancel()
		case <-ctx.Done():
		}
	}()

	inst, err := c.WaitInstance(ctx, name, client.WaitRunning)
	if err == nil {
		// An instance that ran and ended before we looked still has logs
		// to show; only a running one has logs to follow.
		follow := !inst.Status.Phase.Terminal()
		if err := copyLogs(ctx, c, inst, follow, stdout); err != nil && ctx.Err() == nil && !inst.Status.Phase.Terminal() {
			fmt.Fprintf(stderr, "kanga: logs of %s: %v\n", name, err)
		}
		inst, err = c.WaitInstance(ctx, name, client.WaitTerminal)
	}
	select {
	case <-detached:
		return inst, &ExitError{Code: 130, Err: fmt.Errorf("detached from %s, which is still stopping; see `kanga ps -a`", name)}
	default:
	}
	return inst, err
}

// copyLogs copies the logs of every container to w, prefixing lines with
// the container name when there is more than one. The init containers'
// output comes first, each line under its container's name: they have
// ended (or wait to run again) once the instance runs.
func copyLogs(ctx context.Context, c *client.Client, inst api.Instance, follow bool, w io.Writer) error {
	var mu sync.Mutex
	var initErrs []error
	for _, ct := range inst.Spec.InitContainers {
		pw := &prefixWriter{mu: &mu, w: w, prefix: ct.Name + " | "}
		initErrs = append(initErrs, copyContainerLogs(ctx, c, inst.Name, ct.Name, false, pw))
		pw.flush()
	}
	if len(inst.Spec.Containers) <= 1 {
		return errors.Join(append(initErrs, copyContainerLogs(ctx, c, inst.Name, "", follow, w))...)
	}
	var (
		wg   sync.WaitGroup
		errs = make([]error, len(inst.Spec.Containers))
	)
	for i, ct := range inst.Spec.Containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw := &prefixWriter{mu: &mu, w: w, prefix: ct.Name + " | "}
			errs[i] = copyContainerLogs(ctx, c, inst.Name, ct.Name, follow, pw)
			pw.flush()
		}()
	}
	wg.Wait()
	return errors.Join(append(initErrs, errs...)...)
}

func copyContainerLogs(ctx context.Context, c *client.Client, name, container string, follow bool, w io.Writer) error {
	rc, err := c.Logs(ctx, name, client.LogsOptions{Follow: follow, Container: container})
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(w, rc)
	return err
}

// prefixWriter writes whole lines, each with a prefix, under a shared lock
// so that the lines of several containers do not interleave.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if err := p.emit(p.buf[:i+1]); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
}

func (p *prefixWriter) flush() {
	if len(p.buf) > 0 {
		_ = p.emit(append(p.buf, '\n'))
		p.buf = nil
	}
}

func (p *prefixWriter) emit(line []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := io.WriteString(p.w, p.prefix+string(line))
	return err
}

// buildRunRequest turns the flags and arguments of run into a request.
// changed reports whether a flag was set; lookupEnv resolves "-e KEY".
func buildRunRequest(f *runFlags, changed func(string) bool, args []string, stdin io.Reader, lookupEnv func(string) (string, bool)) (api.CreateInstanceRequest, error) {
	var req api.CreateInstanceRequest
	if f.file != "" {
		if len(args) > 0 {
			return req, fmt.Errorf("-f takes the whole instance from %s: give no IMAGE or COMMAND (got %q)", f.file, args)
		}
		for _, name := range []string{"env", "env-file", "workdir", "entrypoint", "cap-add", "cap-drop", "security-opt", "user", "read-only"} {
			if changed(name) {
				return req, fmt.Errorf("--%s sets a field of one container and cannot be combined with -f: set it in %s", name, f.file)
			}
		}
		for _, name := range healthFlagNames {
			if changed(name) {
				return req, errHealthWithFile
			}
		}
		var err error
		if req, err = readRequestFile(f.file, stdin); err != nil {
			return req, err
		}
	} else {
		if len(args) == 0 {
			return req, errors.New("run needs an IMAGE (or -f FILE)\nUsage: kanga run [OPTIONS] IMAGE [COMMAND] [ARG...]")
		}
		env, err := readEnvFiles(f.envFiles, lookupEnv)
		if err != nil {
			return req, err
		}
		flagEnv, err := parseEnv(f.env, lookupEnv)
		if err != nil {
			return req, err
		}
		env = mergeEnv(env, flagEnv)
		image := args[0]
		ct := api.ContainerSpec{
			Name:       containerName(image),
			Image:      image,
			Env:        env,
			WorkingDir: f.workdir,
		}
		if len(args) > 1 {
			ct.Args = args[1:]
		}
		if f.entrypoint != "" {
			ct.Command = []string{f.entrypoint}
		}
		sc, err := securityContext(f.capAdd, f.capDrop, f.securityOpts)
		if err != nil {
			return req, err
		}
		if sc, err = userContext(sc, f.user, f.readOnly); err != nil {
			return req, err
		}
		ct.SecurityContext = sc
		if err := f.health.apply(&ct, changed); err != nil {
			return req, err
		}
		req.Spec.Containers = []api.ContainerSpec{ct}
	}

	if f.name != "" {
		req.Name = f.name
	}
	for _, l := range []struct {
		flag string
		vals []string
		m    *map[string]string
	}{{"--label", f.labels, &req.Labels}, {"--annotation", f.annotations, &req.Annotations}} {
		for _, kv := range l.vals {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return req, fmt.Errorf("%s %q: give KEY=VALUE, e.g. app=web", l.flag, kv)
			}
			if *l.m == nil {
				*l.m = map[string]string{}
			}
			(*l.m)[k] = v
		}
	}
	if changed("cpu") {
		req.Spec.Resources.CPU = f.cpu
	}
	if changed("memory") {
		req.Spec.Resources.Memory = f.memory
	}
	if changed("restart") {
		p, err := parseRestart(f.restart)
		if err != nil {
			return req, err
		}
		req.Spec.RestartPolicy = p
	}
	if changed("runtime") {
		req.Spec.Runtime = f.runtime
	}
	if changed("host-selector") {
		req.Spec.HostSelector = map[string]string{}
		for _, kv := range f.hostSelector {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return req, fmt.Errorf("--host-selector %q: give KEY=VALUE, e.g. zone=a", kv)
			}
			req.Spec.HostSelector[k] = v
		}
	}
	if changed("scheduling-policy") {
		req.Spec.SchedulingPolicy = f.schedulingPolicy
	}
	res := &req.Spec.Resources
	if changed("cpu-policy") {
		res.CPUPolicy = f.cpuPolicy
	}
	if changed("pids") {
		res.Pids = f.pids
	}
	if changed("disk-read-bps") {
		res.DiskReadBPS = f.diskReadBPS
	}
	if changed("disk-write-bps") {
		res.DiskWriteBPS = f.diskWriteBPS
	}
	if changed("disk-read-iops") {
		res.DiskReadIOPS = f.diskReadIOPS
	}
	if changed("disk-write-iops") {
		res.DiskWriteIOPS = f.diskWriteIOPS
	}
	if changed("bandwidth") {
		res.IngressBandwidth, res.EgressBandwidth = f.bandwidth, f.bandwidth
	}
	if changed("ingress-bandwidth") {
		res.IngressBandwidth = f.ingressBandwidth
	}
	if changed("egress-bandwidth") {
		res.EgressBandwidth = f.egressBandwidth
	}
	if changed("type") {
		req.Spec.InstanceType = f.instanceType
	}
	if changed("cpu-limit") {
		res.CPULimit = f.cpuLimit
	}
	if changed("log-size") {
		res.LogSize = f.logSize
	}
	if changed("log-files") {
		res.LogFiles = f.logFiles
	}
	for _, s := range f.ports {
		p, err := parsePort(s)
		if err != nil {
			return req, err
		}
		req.Spec.Ports = append(req.Spec.Ports, p)
	}
	if changed("disk") {
		res.Disk = f.disk
	}
	if err := objectMounts(&req, f.secrets, f.configs, f.envFromSecrets, f.envFromConfigs); err != nil {
		return req, err
	}
	if err := storageFlags(&req, f.tmpfs); err != nil {
		return req, err
	}
	if err := volumeMounts(&req, f.volumes); err != nil {
		return req, err
	}
	for _, s := range f.devices {
		d, err := parseDevice(s)
		if err != nil {
			return req, err
		}
		req.Spec.Devices = append(req.Spec.Devices, d)
	}
	return req, nil
}

func readRequestFile(path string, stdin io.Reader) (api.CreateInstanceRequest, error) {
	var req api.CreateInstanceRequest
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return req, fmt.Errorf("reading the instance file: %w", err)
	}
	// YAML or JSON (which is YAML).
	if b, err = yaml.YAMLToJSON(b); err != nil {
		return req, fmt.Errorf("%s is neither JSON nor YAML: %w", path, err)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	_ = json.Unmarshal(b, &head)
	if head.Kind != "" {
		return requestFromManifest(path, b, head.APIVersion, head.Kind)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	// Unknown fields are typos; say so rather than silently drop them.
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("%s is not a valid CreateInstanceRequest (JSON with name and spec.containers): %w", path, err)
	}
	if len(req.Spec.Containers) == 0 {
		return req, fmt.Errorf("%s has no containers: set spec.containers", path)
	}
	return req, nil
}

// requestFromManifest maps a Kubernetes Pod manifest onto an instance, as
// the virtual node maps the pods bound to it, so that a pod moves between
// Kubernetes and Kanga without being rewritten.
func requestFromManifest(path string, b []byte, apiVersion, kind string) (api.CreateInstanceRequest, error) {
	if kind != "Pod" || apiVersion != "v1" {
		return api.CreateInstanceRequest{}, fmt.Errorf("%s is a %s (%s): -f takes a CreateInstanceRequest or a v1 Pod", path, kind, apiVersion)
	}
	var pod corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pod); err != nil {
		return api.CreateInstanceRequest{}, fmt.Errorf("%s is not a valid Pod: %w", path, err)
	}
	req, err := virtualnode.FromPod(&pod)
	if err != nil {
		return req, fmt.Errorf("%s: %w", path, err)
	}
	return req, nil
}

// containerName derives the container's name from its image: the last path
// element without tag or digest ("127.0.0.1:5000/library/busybox:1.36" is
// "busybox"), made a valid DNS label.
func containerName(image string) string {
	ref, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	ref, _, _ = strings.Cut(ref, ":")
	var b strings.Builder
	for _, r := range strings.ToLower(ref) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	if name == "" {
		return "main"
	}
	return name
}

// parseRestart maps docker's and the API's spellings of a restart policy.
func parseRestart(s string) (api.RestartPolicy, error) {
	switch s {
	case "no", "never", string(api.RestartNever):
		return api.RestartNever, nil
	case "on-failure", string(api.RestartOnFailure):
		return api.RestartOnFailure, nil
	case "always", string(api.RestartAlways):
		return api.RestartAlways, nil
	}
	return "", fmt.Errorf("invalid --restart value %q: expected no, on-failure or always", s)
}

// parseEnv parses -e values: KEY=VALUE, or KEY to copy a variable of the
// caller's environment.
func parseEnv(vals []string, lookupEnv func(string) (string, bool)) ([]api.EnvVar, error) {
	var env []api.EnvVar
	for _, v := range vals {
		key, value, hasValue := strings.Cut(v, "=")
		if key == "" || strings.ContainsAny(key, " \t\n") {
			return nil, fmt.Errorf("invalid -e value %q: expected KEY=VALUE", v)
		}
		if !hasValue {
			var ok bool
			if value, ok = lookupEnv(key); !ok {
				return nil, fmt.Errorf("invalid -e value %q: expected KEY=VALUE (KEY alone copies a variable of your environment, and %s is not set)", v, key)
			}
		}
		env = append(env, api.EnvVar{Name: key, Value: value})
	}
	return env, nil
}

// securityContext builds a container's security context from --cap-add,
// --cap-drop and --security-opt, as docker run takes them; nil when they
// change nothing.
func securityContext(add, drop, opts []string) (*api.SecurityContext, error) {
	var sc api.SecurityContext
	if len(add) > 0 || len(drop) > 0 {
		sc.Capabilities = &api.Capabilities{Add: add, Drop: drop}
	}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		if k != "seccomp" {
			return nil, fmt.Errorf("--security-opt %q: only seccomp=unconfined or seccomp=runtime/default is supported", o)
		}
		switch v {
		case "unconfined":
			sc.SeccompProfile = &api.SeccompProfile{Type: api.SeccompUnconfined}
		case "runtime/default", "RuntimeDefault":
			sc.SeccompProfile = &api.SeccompProfile{Type: api.SeccompRuntimeDefault}
		default:
			return nil, fmt.Errorf("--security-opt seccomp=%s: give unconfined or runtime/default (profile files are not supported)", v)
		}
	}
	if sc.Capabilities == nil && sc.SeccompProfile == nil {
		return nil, nil
	}
	return &sc, nil
}

// userContext adds --user UID[:GID] and --read-only to a container's
// security context (sc may be nil); nil when they change nothing.
func userContext(sc *api.SecurityContext, user string, readOnly bool) (*api.SecurityContext, error) {
	if user == "" && !readOnly {
		return sc, nil
	}
	if sc == nil {
		sc = &api.SecurityContext{}
	}
	sc.ReadOnlyRootFilesystem = readOnly
	if user == "" {
		return sc, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	parse := func(what, s string) (*int64, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > 1<<31-1 {
			return nil, fmt.Errorf("--user %q: the %s must be a number from 0 to 2147483647 (names are not resolved), e.g. --user 1000:1000", user, what)
		}
		return &n, nil
	}
	var err error
	if sc.RunAsUser, err = parse("user", u); err != nil {
		return nil, err
	}
	if hasGroup {
		if sc.RunAsGroup, err = parse("group", g); err != nil {
			return nil, err
		}
	}
	return sc, nil
}

// parsePort parses -p [IP:]HOSTPORT:PORT[/PROTO]; IPv6 addresses go in
// brackets.
func parsePort(s string) (api.PortMapping, error) {
	var p api.PortMapping
	bad := func(why string) (api.PortMapping, error) {
		return api.PortMapping{}, fmt.Errorf("invalid -p value %q: %s; expected [IP:]HOSTPORT:PORT[/tcp|udp], e.g. 8080:80 or 127.0.0.1:8080:80/udp", s, why)
	}
	rest, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		proto = strings.ToLower(proto)
		if proto != "tcp" && proto != "udp" {
			return bad("protocol must be tcp or udp")
		}
		p.Protocol = proto
	}
	var ports string
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]:")
		if end < 0 {
			return bad("unterminated [IPv6] address")
		}
		p.HostIP, ports = rest[1:end], rest[end+2:]
		if ip := net.ParseIP(p.HostIP); ip == nil || ip.To4() != nil {
			return bad(fmt.Sprintf("%q is not an IPv6 address", p.HostIP))
		}
	} else {
		switch parts := strings.Split(rest, ":"); len(parts) {
		case 2:
			ports = rest
		case 3:
			p.HostIP, ports = parts[0], parts[1]+":"+parts[2]
			if net.ParseIP(p.HostIP) == nil {
				return bad(fmt.Sprintf("%q is not an IP address", p.HostIP))
			}
		default:
			return bad("need a host port and a container port")
		}
	}
	host, ctr, ok := strings.Cut(ports, ":")
	if !ok {
		return bad("need a host port and a container port")
	}
	var err error
	if p.HostPort, err = parsePortNumber(host); err != nil {
		return bad("host port " + err.Error())
	}
	if p.ContainerPort, err = parsePortNumber(ctr); err != nil {
		return bad("container port " + err.Error())
	}
	return p, nil
}

func parsePortNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a number from 1 to 65535", s)
	}
	return n, nil
}

// waiting reports an instance held Pending for resources (no host offers
// its runtime class, or no dedicated core is free), or held Creating by
// an init container that fails and waits to be run again.
func waiting(inst api.Instance) bool {
	return inst.Status.Phase == api.PhasePending && api.WaitsForResources(inst.Status.Reason) ||
		inst.Status.Reason == model.ReasonInitCrashLoop
}
