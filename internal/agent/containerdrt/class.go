package containerdrt

import (
	"os"
	"os/exec"
	"path/filepath"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
)

// Namespace is the containerd namespace that holds everything Kanga makes.
const Namespace = "kanga"

// DefaultClass is the runtime class used when an instance names none.
const DefaultClass = "runc"

// ShimRuntime is the containerd runtime (shim) every class uses. The runc v2
// shim drives any OCI runtime with runc's command line, so crun and gVisor's
// runsc plug in through Options.BinaryName. gVisor's own shim
// (containerd-shim-runsc-v1) does not work with containerd 1.6 here.
const ShimRuntime = "io.containerd.runc.v2"

// Class is a runtime class: the shim plus the options that pick the OCI
// runtime. Pass it to containerd.WithRuntime(c.Runtime, c.Options) when
// creating a container.
type Class struct {
	Name    string
	Runtime string
	Options *runcoptions.Options

	// ExclusiveNetns is set for runtimes with their own network stack
	// (gVisor): the sandbox moves the addresses and routes of the network
	// namespace's interfaces into its netstack, removing them from the
	// namespace, and does not put them back when it exits. Such a namespace
	// serves exactly one container, once: a second container in it, or a
	// pooled namespace reused after the first container, sees interfaces
	// without addresses. Set the namespace up again (CNI DEL, then ADD)
	// before reusing it.
	ExclusiveNetns bool
	// SharedNetnsOptions, when set, replace Options for the containers of
	// a multi-container instance. The runc v2 shim cannot drive one gVisor
	// sandbox holding several containers (runsc reports the sandbox's pid
	// for each, and the shim loses track), so each container gets its own
	// sandbox; with runsc's default netstack the first would take the
	// namespace's interfaces from the others. These options run runsc with
	// --network=host: every sandbox uses the namespace's kernel network
	// stack, so the containers share localhost and the instance's IP. The
	// namespace is still the instance's own, but the sandbox's socket calls
	// then reach the host kernel: weaker than the default netstack.
	SharedNetnsOptions *runcoptions.Options
}

// knownClasses lists the classes Kanga knows and the OCI runtime binary each
// runs.
var knownClasses = []struct {
	name, binary string
	// fallback is where the binary is looked for when it is not in PATH.
	fallback string
	// sandboxed marks user-space-kernel runtimes: see Class.ExclusiveNetns
	// and Class.SharedNetnsOptions.
	sandboxed bool
}{
	{name: "runc", binary: "runc"},
	{name: "crun", binary: "crun"},
	// gVisor runs unchanged with runc's command line and needs no flag on
	// this host: the default platform (systrap) needs no /dev/kvm, the
	// default network (sandbox) takes over the interfaces of the network
	// namespace named in the spec, and cgroups (linux.cgroupsPath and
	// linux.resources) are applied to the sandbox process. runsc has no
	// config file; per-container settings it allows (debug, strace,
	// overlay2, ...) go in spec annotations dev.gvisor.flag.<name>.
	// runsc bind-mounts an empty network namespace for its gofers at
	// <Root>/<namespace>/null-netns and leaves it mounted: whoever removes
	// the data dir must unmount it first. scripts/install-runsc.sh installs
	// runsc in /usr/local/bin, which a daemon's PATH may lack.
	{name: "gvisor", binary: "runsc", fallback: "/usr/local/bin/runsc", sandboxed: true},
}

// lookBinary returns the absolute path of the binary, from PATH or the
// fallback path.
func lookBinary(name, fallback string) (string, bool) {
	if bin, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(bin); err == nil {
			return abs, true
		}
	}
	if fallback == "" {
		return "", false
	}
	if _, err := exec.LookPath(fallback); err != nil {
		return "", false
	}
	return fallback, true
}

// Classes returns the runtime classes whose binary is installed. Each class
// keeps its runtime state (the OCI runtime's --root) under dataDir, apart
// from any system containerd (default /run/containerd/runc/<namespace>) and
// from other Kanga data dirs, which may use the same container IDs in the
// same namespace.
func Classes(dataDir string) map[string]Class {
	classes := make(map[string]Class)
	for _, k := range knownClasses {
		bin, ok := lookBinary(k.binary, k.fallback)
		if !ok {
			continue
		}
		classes[k.name] = Class{
			Name:    k.name,
			Runtime: ShimRuntime,
			Options: &runcoptions.Options{
				// An absolute path: the shim resolves BinaryName in its own
				// PATH, which is containerd's, not necessarily ours.
				BinaryName: bin,
				Root:       filepath.Join(dataDir, "runtime", k.name),
			},
			ExclusiveNetns: k.sandboxed,
		}
		if k.sandboxed {
			c := classes[k.name]
			if wrapper, err := writeHostNetWrapper(dataDir, k.name, bin); err == nil {
				c.SharedNetnsOptions = &runcoptions.Options{BinaryName: wrapper, Root: c.Options.Root}
			}
			classes[k.name] = c
		}
	}
	return classes
}

// writeHostNetWrapper writes a script that runs runsc with --network=host.
// runsc has no config file and takes that flag only on its command line,
// and the shim's command line is fixed; a wrapper as BinaryName is the
// documented way in.
func writeHostNetWrapper(dataDir, class, runsc string) (string, error) {
	path := filepath.Join(dataDir, "runtime", class+"-hostnet")
	script := "#!/bin/sh\n# Generated by kanga: " + class + " with the network namespace's kernel stack.\nexec " + runsc + " --network=host \"$@\"\n"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", err
	}
	return path, nil
}
