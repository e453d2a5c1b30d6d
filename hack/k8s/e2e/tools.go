//go:build tools

// Package conformance records the programs the conformance run needs
// besides the test binary as dependencies of this module, so that `go
// build` of each works from here with the same pinned dependencies:
// ginkgo (the runner that drives the test binary in parallel), agnhost
// and nonewprivs (the programs of the e2e suite's test images).
package conformance

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/test/images/agnhost"
	_ "k8s.io/kubernetes/test/images/nonewprivs"
)
