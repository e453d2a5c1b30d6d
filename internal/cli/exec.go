package cli

import (
	"context"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

type execFlags struct {
	interactive bool
	tty         bool
	container   string
	env         []string
	workdir     string
}

func newExecCommand(o *options) *cobra.Command {
	f := &execFlags{}
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] NAME COMMAND [ARG...]",
		Short: "Run a command in a running instance",
		Example: `  kanga exec web cat /etc/hostname
  kanga exec -it web sh`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runExec(cmd, o, f, args[0], args[1:])
		},
	}
	cmd.Flags().SetInterspersed(false)
	fl := cmd.Flags()
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "forward stdin to the command")
	fl.BoolVarP(&f.tty, "tty", "t", false, "give the command a terminal")
	fl.StringVarP(&f.container, "container", "c", "", "container name (default: the first)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable: KEY=VALUE, or KEY to copy it from your environment")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory of the command")
	refuseFlags(cmd, refusedExecFlags)
	return cmd
}

func runExec(cmd *cobra.Command, o *options, f *execFlags, name string, argv []string) error {
	env, err := parseEnv(f.env, os.LookupEnv)
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	opts := client.ExecOptions{
		Container: f.container,
		Cmd:       argv,
		WorkDir:   f.workdir,
		TTY:       f.tty,
		Stdout:    cmd.OutOrStdout(),
		Stderr:    cmd.ErrOrStderr(),
	}
	for _, e := range env {
		opts.Env = append(opts.Env, e.Name+"="+e.Value)
	}
	stdin := cmd.InOrStdin()
	if f.interactive {
		opts.Stdin = stdin
	}
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	if file, ok := stdin.(*os.File); ok && f.tty && term.IsTerminal(int(file.Fd())) {
		fd := int(file.Fd())
		state, err := term.MakeRaw(fd)
		if err != nil {
			return err
		}
		defer term.Restore(fd, state)
		if sz, ok := terminalSize(fd); ok {
			opts.Size = &sz
		}
		opts.Resize = watchTerminalSize(ctx, fd)
	}
	code, err := c.Exec(ctx, name, opts)
	if err != nil {
		return err
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

// terminalSize reads the size of the terminal fd.
func terminalSize(fd int) (api.TerminalSize, bool) {
	w, h, err := term.GetSize(fd)
	if err != nil || w <= 0 || h <= 0 {
		return api.TerminalSize{}, false
	}
	return api.TerminalSize{Width: uint16(w), Height: uint16(h)}, true
}
