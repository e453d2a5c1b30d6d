// Package cli implements the kanga command line: the docker-like client
// verbs, one file per verb, on top of the client SDK.
package cli

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
)

// Version is the version of the kanga binary, set at build time with
// -ldflags "-X github.com/kanga-run/kanga/internal/cli.Version=v0.1.0".
var Version = "dev"

// ExitError makes the process exit with Code. When Err is nil nothing is
// printed: the command has already said what happened (or, as for `kanga
// run`, the code is the container's own).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// errorExitCode is docker's exit code for a failure of the tool itself (a
// refused request, an unreachable server, a bad flag), as opposed to a
// container's or command's own exit code.
const errorExitCode = 125

// noSuchObjectExitCode is the code of a verb whose object does not exist:
// docker's inspect, rm, stop, logs and exec exit 1 for "No such object",
// and scripts test for it (`kanga inspect x >/dev/null || kanga run ...`).
// run keeps 125 for everything, as docker run does.
const noSuchObjectExitCode = 1

// ExitCode reports err on w as "Error: ..." where needed and returns the
// code the process should exit with: 0 for nil, ExitError's code, 1 for
// an object that does not exist, else 125.
func ExitCode(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			printError(w, ee.Err)
		}
		return ee.Code
	}
	printError(w, err)
	return failureCode(err)
}

// failureCode is the exit code of a verb's own failure.
func failureCode(err error) int {
	if errdefs.IsNotFound(err) {
		return noSuchObjectExitCode
	}
	return errorExitCode
}

func printError(w io.Writer, err error) {
	// A server-side failure names its request, which the server's log
	// lines carry: what an operator needs to find out more.
	var ae *client.APIError
	if errors.As(err, &ae) && ae.StatusCode >= 500 && ae.RequestID != "" {
		fmt.Fprintf(w, "Error: %v (request ID %s)\n", err, ae.RequestID)
		return
	}
	fmt.Fprintf(w, "Error: %v\n", err)
}

// options are shared by the client verbs.
type options struct {
	configPath string
	// tenant, if set, is the tenant an administrator's requests act in.
	tenant string
	// now is the clock for relative times ("5 seconds ago").
	now func() time.Time
}

// client builds an API client from --config, the environment and the
// config file.
func (o *options) client() (*client.Client, error) {
	cfg, err := client.ResolveConfig(o.configPath)
	if err != nil {
		return nil, err
	}
	opts, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	return client.New(cfg.Addr, cfg.Token, append(opts, client.WithUserAgent("kanga-cli/"+Version), client.WithTenant(o.tenant))...)
}

// NewRootCommand returns the kanga command with all its verbs.
func NewRootCommand() *cobra.Command {
	return newRootCommand(&options{now: time.Now})
}

func newRootCommand(o *options) *cobra.Command {
	root := &cobra.Command{
		Use:   "kanga",
		Short: "Kanga runs container instances on a shared pool of hosts",
		Long: `Kanga runs container instances on a shared pool of hosts.

The client verbs talk to the server at $KANGA_ADDR with the token $KANGA_TOKEN;
unset, they come from the config file (--config, $KANGA_CONFIG or
~/.kanga/config.json) that ` + "`kanga up`" + ` writes.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&o.configPath, "config", "", "client config file (default $KANGA_CONFIG or ~/.kanga/config.json)")
	root.PersistentFlags().StringVar(&o.tenant, "tenant", "", "act in this tenant instead of the token's (administrators only), e.g. to pull images into a virtual node's namespace tenant")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w\nSee '%s --help'.", err, c.CommandPath())
	})

	root.AddCommand(
		newRunCommand(o),
		newPsCommand(o),
		newInspectCommand(o),
		newLogsCommand(o),
		newExecCommand(o),
		newStopCommand(o),
		newKillCommand(o),
		newDeviceCommand(o),
		newRmCommand(o),
		newWaitCommand(o),
		newPortCommand(o),
		newTopCommand(o),
		newImageCommand(o),
		newImagesCommand(o),
		newVersionCommand(o),
		newTenantCommand(o),
		newHostCommand(o),
		newRuntimesCommand(o),
		newStatsCommand(o),
		newSLACommand(o),
		newTypesCommand(o),
		newBenchCommand(o),
		newVirtualNodeCommand(o),
		newTokenCommand(o),
		newSecretCommand(o),
		newVolumeCommand(o),
		newConfigCommand(o),
		newUsageCommand(o),
		newAuditCommand(o),
		newEventsCommand(o),
	)
	root.AddCommand(daemonCommands()...)
	disableFlagsInUseLine(root)
	addCompletions(root, o)
	return root
}

// disableFlagsInUseLine stops cobra from appending "[flags]" to usage lines
// that already say [OPTIONS].
func disableFlagsInUseLine(c *cobra.Command) {
	c.DisableFlagsInUseLine = true
	for _, sub := range c.Commands() {
		disableFlagsInUseLine(sub)
	}
}

// forEachName runs fn for each name, reports each failure on w and returns
// a silent ExitError if any failed: like docker's stop and rm it goes on
// with the rest. The code is 1 when every failure was a missing object,
// else 125: that Kanga refused one.
func forEachName(w io.Writer, names []string, fn func(name string) error) error {
	code := 0
	for _, n := range names {
		if err := fn(n); err != nil {
			printError(w, err)
			code = max(code, failureCode(err))
		}
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
