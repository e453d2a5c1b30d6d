package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/assembly"
)

func newDownCommand() *cobra.Command {
	var (
		dataDir string
		purge   bool
	)
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop a kanga up (or kanga server, kanga agent) started with the same --data-dir",
		Long: `Stop the kanga up process that uses --data-dir. Instances keep running and are
adopted by the next kanga up, unless --purge removes them all first. kanga server and
kanga agent record their pid in their data dir the same way, so kanga down --data-dir
stops them too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			b, err := os.ReadFile(assembly.PIDFile(dataDir))
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("no kanga up is running with data dir %s (no %s)", dataDir, assembly.PIDFile(dataDir))
				}
				return err
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 0 {
				return fmt.Errorf("pid file %s is corrupt: remove it", assembly.PIDFile(dataDir))
			}
			if purge {
				if err := purgeInstances(ctx, cmd); err != nil {
					return err
				}
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				if errors.Is(err, syscall.ESRCH) {
					_ = os.Remove(assembly.PIDFile(dataDir))
					fmt.Fprintln(cmd.OutOrStdout(), "kanga was not running")
					return nil
				}
				return err
			}
			// Stopping destroys the unclaimed pool and warm sandboxes
			// (up to 20 s and 30 s of their own budgets) before containerd
			// stops; give up only well after that, or the caller may
			// remove the data dir under a kanga that is still cleaning up.
			deadline := time.Now().Add(stopWait)
			for time.Now().Before(deadline) {
				if syscall.Kill(pid, 0) != nil {
					fmt.Fprintln(cmd.OutOrStdout(), "kanga stopped")
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return fmt.Errorf("kanga (pid %d) did not stop within %s: see its log; it may still be cleaning up", pid, stopWait)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultDataDir, "data dir of the kanga up to stop")
	cmd.Flags().BoolVar(&purge, "purge", false, "remove every instance (kanga rm -f) before stopping")
	return cmd
}

func purgeInstances(ctx context.Context, cmd *cobra.Command) error {
	if ctx == nil {
		ctx = context.Background()
	}
	c, err := client.FromEnv()
	if err != nil {
		return err
	}
	insts, err := c.ListInstances(ctx)
	if err != nil {
		return fmt.Errorf("listing instances to purge: %w", err)
	}
	for _, inst := range insts {
		if err := c.DeleteInstance(ctx, inst.Name, true); err != nil {
			return fmt.Errorf("removing %s: %w", inst.Name, err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), "removed", inst.Name)
	}
	return nil
}

// stopWait is how long kanga down waits for kanga up to exit.
const stopWait = 90 * time.Second
