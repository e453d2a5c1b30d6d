// Command kanga-init is the holder of a warm container and the launcher
// of a container with env from secrets: see package
// internal/agent/warm/holder. The agent bind-mounts it into the container
// at /.kanga/init; it is not meant to be run by hand.
package main

import (
	"os"

	"github.com/kanga-run/kanga/internal/agent/warm/holder"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == holder.ExecArg {
		err := holder.ExecWithEnv(os.Args[2:], os.Environ(), holder.OS{})
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(127)
	}
	if len(os.Args) == 2 && os.Args[1] == holder.LaunchArg {
		err := holder.Launch(holder.EnvPath, holder.OS{})
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(127)
	}
	ack, err := os.OpenFile(holder.AckPath, os.O_WRONLY, 0) // O_CLOEXEC by Go
	if err != nil {
		os.Stderr.WriteString("kanga-init: " + err.Error() + "\n")
		os.Exit(127)
	}
	if err := holder.Run(ack, os.Stdin, holder.OS{}); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
	}
	os.Exit(127)
}
