//go:build !linux

package fill

// LowPriority runs fn; only Linux has per-thread priorities to lower.
func LowPriority(fn func()) { fn() }
