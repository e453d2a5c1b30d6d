package cli

import (
	"fmt"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// storageFlags adds the run command's storage flags to req: each --tmpfs
// is a Memory emptyDir of its own mounted in every container (-v is
// volumeMounts'). Sizes and paths are the server's to validate; the
// errors here are about the flags' shape.
func storageFlags(req *api.CreateInstanceRequest, tmpfs []string) error {
	for i, v := range tmpfs {
		dir, opts, _ := strings.Cut(v, ":")
		if !strings.HasPrefix(dir, "/") {
			return fmt.Errorf("--tmpfs %q: give an absolute path, /DIR[:size=64Mi], e.g. --tmpfs /scratch:size=64Mi", v)
		}
		src := &api.EmptyDirVolumeSource{Medium: api.MediumMemory}
		ro := false
		if opts != "" {
			for _, o := range strings.Split(opts, ",") {
				switch k, val, _ := strings.Cut(o, "="); k {
				case "size":
					if val == "" {
						return fmt.Errorf("--tmpfs %q: size= needs a quantity, e.g. size=64Mi", v)
					}
					src.SizeLimit = val
				case "ro":
					ro = true
				case "rw":
					ro = false
				default:
					return fmt.Errorf("--tmpfs %q: option %q is not size=QUANTITY, ro or rw", v, o)
				}
			}
		}
		name := fmt.Sprintf("tmpfs-%d", i)
		req.Spec.Volumes = append(req.Spec.Volumes, api.Volume{Name: name, EmptyDir: src})
		mountAll(req, api.VolumeMount{Name: name, MountPath: dir, ReadOnly: ro})
	}
	return nil
}

// mountAll mounts m in every container of req.
func mountAll(req *api.CreateInstanceRequest, m api.VolumeMount) {
	for j := range req.Spec.Containers {
		c := &req.Spec.Containers[j]
		c.VolumeMounts = append(c.VolumeMounts, m)
	}
}
