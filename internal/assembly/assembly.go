// Package assembly holds what the platform's processes share when they are
// put together: the pid file `kanga down` reads and the ports every role
// keeps away from tenants. The roles themselves are its sub-packages: cp,
// the control plane (`kanga server`, and half of `kanga up`), and host, a
// host's containerd, network and agent (`kanga agent`, and the other half
// of `kanga up`).
package assembly

import (
	"os"
	"path/filepath"
	"strconv"

	"github.com/kanga-run/kanga/internal/model"
)

// PIDFile is where a running kanga up, server or agent records its pid,
// for `kanga down`.
func PIDFile(dataDir string) string { return filepath.Join(dataDir, "kanga.pid") }

// WritePIDFile records this process's pid in dataDir; the returned
// function removes it again.
func WritePIDFile(dataDir string) (remove func(), err error) {
	path := PIDFile(dataDir)
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, err
	}
	return func() { _ = os.Remove(path) }, nil
}

// ReserveEtcd reserves etcd's ports: its well-known client and peer ports
// (2379, 2380), wherever it runs, and those of the endpoints the platform
// uses.
func ReserveEtcd(p *model.PortPolicy, endpoints []string) {
	p.Reserve("etcd", 2379, 2380)
	for _, e := range endpoints {
		p.ReserveAddress("etcd", e)
	}
}
