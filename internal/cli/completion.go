package cli

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// completedArgs says which positional arguments of a verb name what: how
// many leading arguments (-1: all of them) are instances or images. Kept
// in one table, by command path, so that shell completion of names (kanga
// completion bash|zsh|fish) covers every verb that takes them.
var completedArgs = map[string]struct {
	kind  string // "instance" or "image"
	count int
}{
	"kanga inspect":       {"instance", -1},
	"kanga logs":          {"instance", 1},
	"kanga exec":          {"instance", 1},
	"kanga stop":          {"instance", -1},
	"kanga kill":          {"instance", -1},
	"kanga rm":            {"instance", -1},
	"kanga wait":          {"instance", -1},
	"kanga port":          {"instance", 1},
	"kanga top":           {"instance", 1},
	"kanga stats":         {"instance", 1},
	"kanga sla":           {"instance", 1},
	"kanga run":           {"image", 1},
	"kanga image rm":      {"image", -1},
	"kanga image inspect": {"image", -1},
	"kanga image prewarm": {"image", 1},
}

// addCompletions sets the dynamic completion of instance and image names
// on the verbs of completedArgs: the names come from the server, as the
// user's own ps and image ls would list them.
func addCompletions(root *cobra.Command, o *options) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if spec, ok := completedArgs[c.CommandPath()]; ok {
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				if spec.count >= 0 && len(args) >= spec.count {
					// The command to run, or a port: nothing to offer.
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				names, err := o.completeNames(cmd, spec.kind)
				if err != nil {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				var out []string
				for _, n := range names {
					if strings.HasPrefix(n, toComplete) && !slices.Contains(args, n) {
						out = append(out, n)
					}
				}
				return out, cobra.ShellCompDirectiveNoFileComp
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// completeNames lists the names of the caller's instances (ended ones
// too: rm and inspect take them) or images, sorted.
func (o *options) completeNames(cmd *cobra.Command, kind string) ([]string, error) {
	c, err := o.client()
	if err != nil {
		return nil, err
	}
	var names []string
	if kind == "image" {
		imgs, err := c.ListImages(cmd.Context())
		for _, im := range imgs {
			names = append(names, im.Name)
		}
		slices.Sort(names)
		return names, err
	}
	insts, err := c.ListInstances(cmd.Context())
	for _, in := range insts {
		names = append(names, in.Name)
	}
	slices.Sort(names)
	return names, err
}
