package cli

import (
	"fmt"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// storageFlags adds the run command's storage flags to req: each --tmpfs
// is a Memory emptyDir of its own mounted in every container, and each
// -v mounts a volume the spec declares (an emptyDir of a -f file) in
// every container. Sizes and paths are the server's to validate; the
// errors here are about the flags' shape.
func storageFlags(req *api.CreateInstanceRequest, tmpfs, volumes []string) error {
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
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") {
			return fmt.Errorf("-v %q: give NAME:/PATH[:ro], NAME a volume of spec.volumes in the -f file", v)
		}
		ro := false
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				ro = true
			case "rw":
			default:
				return fmt.Errorf("-v %q: the third part is ro or rw, not %q", v, parts[2])
			}
		}
		declared := false
		for _, vol := range req.Spec.Volumes {
			declared = declared || vol.Name == parts[0]
		}
		if !declared {
			return fmt.Errorf(`-v %q: the spec has no volume %q: declare it in spec.volumes of a -f file, e.g. {"name": %q, "emptyDir": {"sizeLimit": "1Gi"}}, or use --tmpfs /PATH for scratch space in memory`, v, parts[0], parts[0])
		}
		mountAll(req, api.VolumeMount{Name: parts[0], MountPath: parts[1], ReadOnly: ro})
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
