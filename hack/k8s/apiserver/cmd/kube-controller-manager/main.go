// Command kube-controller-manager is the upstream controller manager, built
// from the module proxy so the virtual-node Deployment test runs the real
// ReplicaSet and Deployment controllers. It shares the kube-apiserver's
// synthetic module so both are built from one pinned dependency set.
package main

import (
	"os"
	_ "time/tzdata" // the CronJob controller needs zone data on hosts without it

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
