//go:build !unix

package cli

import (
	"context"

	"github.com/kanga-run/kanga/api"
)

// watchTerminalSize sends the terminal's size once: there is no SIGWINCH.
func watchTerminalSize(_ context.Context, fd int) <-chan api.TerminalSize {
	out := make(chan api.TerminalSize, 1)
	if size, ok := terminalSize(fd); ok {
		out <- size
	}
	return out
}
