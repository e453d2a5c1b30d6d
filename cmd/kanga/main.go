// Command kanga is Kanga's single binary: the client verbs, and the server
// and agent daemons.
package main

import (
	"context"
	"os"

	"github.com/kanga-run/kanga/internal/cli"
)

func main() {
	err := cli.NewRootCommand().ExecuteContext(context.Background())
	os.Exit(cli.ExitCode(os.Stderr, err))
}
