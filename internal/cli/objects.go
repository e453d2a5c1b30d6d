package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

// objectVerbs are what differs between `kanga secret` and `kanga config`.
type objectVerbs struct {
	noun   string // secret or config
	create func(c *client.Client, cmd *cobra.Command, name string, data map[string][]byte) (int, error)
	update func(c *client.Client, cmd *cobra.Command, name string, data map[string][]byte) (int, error)
	// list returns the table's rows, the list document and its items.
	list   func(c *client.Client, cmd *cobra.Command) ([]objectRow, any, []any, error)
	get    func(c *client.Client, cmd *cobra.Command, name string) (any, error)
	remove func(c *client.Client, cmd *cobra.Command, name string) error
}

// namedObject is a secret or config inspect found.
type namedObject struct {
	name string
	obj  any
}

type objectRow struct {
	name    string
	keys    []api.ObjectKey
	updated time.Time
}

func newSecretCommand(o *options) *cobra.Command {
	v := objectVerbs{
		noun: "secret",
		create: func(c *client.Client, cmd *cobra.Command, name string, data map[string][]byte) (int, error) {
			s, err := c.CreateSecret(cmd.Context(), name, data)
			return len(s.Keys), err
		},
		update: func(c *client.Client, cmd *cobra.Command, name string, data map[string][]byte) (int, error) {
			s, err := c.UpdateSecret(cmd.Context(), name, data)
			return len(s.Keys), err
		},
		list: func(c *client.Client, cmd *cobra.Command) ([]objectRow, any, []any, error) {
			items, err := c.ListSecrets(cmd.Context())
			var rows []objectRow
			for _, s := range items {
				rows = append(rows, objectRow{s.Name, s.Keys, s.UpdatedAt})
			}
			return rows, api.SecretList{Items: items}, itemsOf(items), err
		},
		remove: func(c *client.Client, cmd *cobra.Command, name string) error {
			return c.DeleteSecret(cmd.Context(), name)
		},
	}
	var reveal bool
	v.get = func(c *client.Client, cmd *cobra.Command, name string) (any, error) {
		if reveal {
			return c.RevealSecret(cmd.Context(), name)
		}
		return c.GetSecret(cmd.Context(), name)
	}
	cmd := objectCommand(o, v, `Manage secrets: named sets of sensitive values of your tenant, encrypted
at rest. Instances refer to them by name (spec.volumes, envFrom, valueFrom).

Values are never printed by ls or inspect, which show keys and sizes; only
inspect --reveal prints them (base64, as a Kubernetes Secret does), which
needs the secrets:reveal scope and is recorded in the audit log.`)
	for _, sub := range cmd.Commands() {
		if sub.Name() == "inspect" {
			sub.Flags().BoolVar(&reveal, "reveal", false, "also print the values (base64); needs the secrets:reveal scope and is audited")
		}
	}
	rotate := &cobra.Command{
		Use:   "rotate-key",
		Short: "Make a new secret key and re-encrypt every tenant's secrets with it (administrators)",
		Long: `Make a new secret key and re-encrypt every tenant's secrets with it
(administrators). The key file is in the control plane's data directory
(secret-keys, mode 0600); old keys are dropped from it once no secret uses them.
With several kanga server replicas, copy the file to each afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			rot, err := c.RotateSecretKey(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new key %s: %d secrets re-encrypted, retired %s\n", rot.KeyID, rot.Reencrypted, orNone(strings.Join(rot.Retired, ",")))
			return nil
		},
	}
	cmd.AddCommand(rotate)
	return cmd
}

func newConfigCommand(o *options) *cobra.Command {
	v := objectVerbs{
		noun: "config",
		create: func(c *client.Client, cmd *cobra.Command, name string, data map[string][]byte) (int, error) {
			s, err := c.CreateConfig(cmd.Context(), name, data)
			return len(s.Keys), err
		},
		update: func(c *client.Client, cmd *cobra.Command, name string, data map[string][]byte) (int, error) {
			s, err := c.UpdateConfig(cmd.Context(), name, data)
			return len(s.Keys), err
		},
		list: func(c *client.Client, cmd *cobra.Command) ([]objectRow, any, []any, error) {
			items, err := c.ListConfigs(cmd.Context())
			var rows []objectRow
			for _, s := range items {
				rows = append(rows, objectRow{s.Name, s.Keys, s.UpdatedAt})
			}
			return rows, api.ConfigList{Items: items}, itemsOf(items), err
		},
		get: func(c *client.Client, cmd *cobra.Command, name string) (any, error) {
			return c.GetConfig(cmd.Context(), name)
		},
		remove: func(c *client.Client, cmd *cobra.Command, name string) error {
			return c.DeleteConfig(cmd.Context(), name)
		},
	}
	return objectCommand(o, v, `Manage configs: named sets of configuration files of your tenant, stored
as is. Instances refer to them by name (spec.volumes, envFrom, valueFrom);
env from a config is resolved when the instance is created.`)
}

// objectCommand builds create, update, ls, inspect and rm for a noun.
func objectCommand(o *options, v objectVerbs, long string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   v.noun,
		Short: "Create, list, inspect, update and remove " + v.noun + "s of your tenant",
		Long:  long,
	}
	var files, literals []string
	write := func(update bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			data, err := objectData(files, literals, os.ReadFile)
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			do, verb := v.create, "created"
			if update {
				do, verb = v.update, "updated"
			}
			n, err := do(c, cmd, args[0], data)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			fmt.Fprintf(cmd.ErrOrStderr(), "%s %s %s with %d keys\n", v.noun, args[0], verb, n)
			return nil
		}
	}
	dataFlags := func(c *cobra.Command) {
		c.Flags().StringArrayVar(&files, "from-file", nil, "a key from a file: KEY=PATH, or PATH (the key is the file's name); repeatable")
		c.Flags().StringArrayVar(&literals, "from-literal", nil, "a key with a value: KEY=VALUE; repeatable")
	}
	create := &cobra.Command{
		Use:   "create NAME [--from-file KEY=PATH]... [--from-literal KEY=VALUE]...",
		Short: "Create a " + v.noun,
		Example: fmt.Sprintf(`  kanga %[1]s create db --from-literal user=app --from-file password=./pw.txt
  kanga %[1]s create tls --from-file ./tls.crt --from-file ./tls.key`, v.noun),
		Args: cobra.ExactArgs(1),
		RunE: write(false),
	}
	dataFlags(create)
	update := &cobra.Command{
		Use:   "update NAME [--from-file KEY=PATH]... [--from-literal KEY=VALUE]...",
		Short: "Replace a " + v.noun + "'s data as a whole",
		Args:  cobra.ExactArgs(1),
		RunE:  write(true),
	}
	dataFlags(update)

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List " + v.noun + "s with their keys (never values)",
		Args:    cobra.NoArgs,
	}
	lsOut := addOutputFlags(ls, true)
	ls.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		rows, list, items, err := v.list(c, cmd)
		if err != nil {
			return err
		}
		now := o.now()
		lv := view{data: list, items: items, table: func(w io.Writer, _ bool) error { return writeObjects(w, rows, now) }}
		for _, r := range rows {
			lv.names = append(lv.names, r.name)
		}
		return lsOut.print(cmd.OutOrStdout(), lv)
	}
	inspect := &cobra.Command{
		Use:   "inspect NAME [NAME...]",
		Short: "Show " + v.noun + "s as JSON",
		Args:  cobra.MinimumNArgs(1),
	}
	inOut := addOutputFlags(inspect, false)
	inspect.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		var found []namedObject
		err = forEachName(cmd.ErrOrStderr(), args, func(name string) error {
			obj, err := v.get(c, cmd, name)
			if err != nil {
				return err
			}
			found = append(found, namedObject{name, obj})
			return nil
		})
		if len(found) > 0 {
			objs := make([]any, len(found))
			names := make([]string, len(found))
			for i, f := range found {
				objs[i], names[i] = f.obj, f.name
			}
			if werr := inOut.print(cmd.OutOrStdout(), view{data: objs, items: objs, names: names}); werr != nil {
				return werr
			}
		}
		return err
	}
	rm := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove " + v.noun + "s",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return forEachName(cmd.ErrOrStderr(), args, func(name string) error {
				if err := v.remove(c, cmd, name); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
				return nil
			})
		},
	}
	cmd.AddCommand(create, update, ls, inspect, rm)
	return cmd
}

// objectData reads --from-file and --from-literal into a secret's or
// config's data. A key given twice is an error, as kubectl makes it.
func objectData(files, literals []string, readFile func(string) ([]byte, error)) (map[string][]byte, error) {
	data := map[string][]byte{}
	add := func(flag, k string, v []byte) error {
		if k == "" {
			return fmt.Errorf("--%s: the key is empty", flag)
		}
		if _, dup := data[k]; dup {
			return fmt.Errorf("--%s: key %q is given twice", flag, k)
		}
		data[k] = v
		return nil
	}
	for _, f := range files {
		k, path, ok := strings.Cut(f, "=")
		if !ok {
			k, path = filepath.Base(f), f
		}
		b, err := readFile(path)
		if err != nil {
			return nil, fmt.Errorf("--from-file %s: %w", f, err)
		}
		if err := add("from-file", k, b); err != nil {
			return nil, err
		}
	}
	for _, l := range literals {
		k, val, ok := strings.Cut(l, "=")
		if !ok {
			// Never echo the argument: it may be the secret itself.
			return nil, errors.New("--from-literal: expected KEY=VALUE")
		}
		if err := add("from-literal", k, []byte(val)); err != nil {
			return nil, err
		}
	}
	size := 0
	for k, v := range data {
		size += len(k) + len(v)
	}
	if size > api.MaxObjectBytes {
		return nil, fmt.Errorf("the data is %s (%d bytes), more than the 1 MiB a secret or config may hold", humanSize(int64(size)), size)
	}
	return data, nil
}

func writeObjects(w io.Writer, rows []objectRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKEYS\tSIZE\tUPDATED")
	for _, r := range rows {
		names := make([]string, 0, len(r.keys))
		size := 0
		for _, k := range r.keys {
			names = append(names, k.Name)
			size += k.Size
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.name, orNone(strings.Join(names, ",")), humanSize(int64(size)), ago(now, r.updated))
	}
	return tw.Flush()
}

// objectMounts adds the volumes and env sources of run's --secret,
// --config-mount, --env-from-secret and --env-from-config to every
// container.
func objectMounts(req *api.CreateInstanceRequest, secrets, configs, envSecrets, envConfigs []string) error {
	add := func(flag, kind string, i int, v string) error {
		name, dir, ok := strings.Cut(v, ":")
		if !ok || name == "" || !strings.HasPrefix(dir, "/") {
			return fmt.Errorf("--%s %q: give NAME:/DIR, e.g. --%s db:/etc/db", flag, v, flag)
		}
		vol := api.Volume{Name: fmt.Sprintf("%s-%d", kind, i)}
		src := &api.ObjectVolumeSource{Name: name}
		if kind == "secret" {
			vol.Secret = src
		} else {
			vol.Config = src
		}
		req.Spec.Volumes = append(req.Spec.Volumes, vol)
		for j := range req.Spec.Containers {
			c := &req.Spec.Containers[j]
			c.VolumeMounts = append(c.VolumeMounts, api.VolumeMount{Name: vol.Name, MountPath: dir, ReadOnly: true})
		}
		return nil
	}
	for i, v := range secrets {
		if err := add("secret", "secret", i, v); err != nil {
			return err
		}
	}
	for i, v := range configs {
		if err := add("config-mount", "config", i, v); err != nil {
			return err
		}
	}
	for j := range req.Spec.Containers {
		c := &req.Spec.Containers[j]
		for _, n := range envConfigs {
			c.EnvFrom = append(c.EnvFrom, api.EnvFromSource{ConfigMapRef: &api.ObjectRef{Name: n}})
		}
		for _, n := range envSecrets {
			c.EnvFrom = append(c.EnvFrom, api.EnvFromSource{SecretRef: &api.ObjectRef{Name: n}})
		}
	}
	return nil
}
