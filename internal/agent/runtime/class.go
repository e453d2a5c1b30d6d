package runtime

import (
	"os/exec"
	"path/filepath"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
)

// Namespace is the containerd namespace that holds everything Kanga makes.
const Namespace = "kanga"

// DefaultClass is the runtime class used when an instance names none.
const DefaultClass = "runc"

// ShimRuntime is the containerd runtime (shim) every class uses. The runc v2
// shim drives any OCI runtime with runc's command line, so crun (and gVisor's
// runsc) plug in through Options.BinaryName.
const ShimRuntime = "io.containerd.runc.v2"

// Class is a runtime class: the shim plus the options that pick the OCI
// runtime. Pass it to containerd.WithRuntime(c.Runtime, c.Options) when
// creating a container.
type Class struct {
	Name    string
	Runtime string
	Options *runcoptions.Options
}

// knownClasses maps class names to the OCI runtime binary they run.
var knownClasses = []struct{ name, binary string }{
	{"runc", "runc"},
	{"crun", "crun"},
}

// Classes returns the runtime classes whose binary is in PATH. Each class
// keeps its runtime state (the OCI runtime's --root) under dataDir, apart
// from any system containerd (default /run/containerd/runc/<namespace>) and
// from other Kanga data dirs, which may use the same container IDs in the
// same namespace.
func Classes(dataDir string) map[string]Class {
	classes := make(map[string]Class)
	for _, k := range knownClasses {
		bin, err := exec.LookPath(k.binary)
		if err != nil {
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
		}
	}
	return classes
}
