//go:build unix

package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kanga-run/kanga/api"
)

// watchTerminalSize sends the size of the terminal fd now and after every
// SIGWINCH until ctx ends.
func watchTerminalSize(ctx context.Context, fd int) <-chan api.TerminalSize {
	out := make(chan api.TerminalSize, 1)
	if size, ok := terminalSize(fd); ok {
		out <- size
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		defer signal.Stop(winch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-winch:
				size, ok := terminalSize(fd)
				if !ok {
					continue
				}
				select {
				case out <- size:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}
