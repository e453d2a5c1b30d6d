package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
	"text/template"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// outputFlags are the one set of output flags of every verb that prints
// objects: -o json|yaml|wide|name, --format TEMPLATE (docker's) and, on
// verbs that print a list, -q.
type outputFlags struct {
	output string
	format string
	quiet  bool
	// asJSON is the older --json of stats and sla, kept as -o json.
	asJSON bool
}

// outputs are the values -o takes; "" and "table" are the default table.
var outputs = []string{"json", "yaml", "wide", "name"}

// addOutputFlags registers -o and --format on cmd, and -q when the verb
// prints a list.
func addOutputFlags(cmd *cobra.Command, list bool) *outputFlags {
	f := &outputFlags{}
	fl := cmd.Flags()
	fl.StringVarP(&f.output, "output", "o", "", "output format: json, yaml, wide (the table with more columns, where there are more) or name (names only)")
	usage := "print with a Go template, as docker does, e.g. '{{.Name}}' or 'table {{.Name}}\\t{{.Status}}'; {{json .}} prints an item as JSON"
	if list {
		// docker's list verbs have no -f (ps -f is --filter).
		fl.StringVar(&f.format, "format", "", usage)
	} else {
		// docker inspect -f '{{...}}' is what scripts type.
		fl.StringVarP(&f.format, "format", "f", "", usage)
	}
	if list {
		fl.BoolVarP(&f.quiet, "quiet", "q", false, "only print names (what the other verbs take)")
	}
	cmd.PreRunE = chainPreRun(cmd.PreRunE, f.validate)
	return f
}

// addJSONAlias adds the older --json, which means -o json.
func (f *outputFlags) addJSONAlias(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "same as -o json")
}

func chainPreRun(first func(*cobra.Command, []string) error, then func() error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if first != nil {
			if err := first(cmd, args); err != nil {
				return err
			}
		}
		return then()
	}
}

// validate refuses a bad -o or template before anything is asked of the
// server.
func (f *outputFlags) validate() error {
	if f.asJSON {
		if f.output != "" && f.output != "json" {
			return fmt.Errorf("--json and -o %s: give one output format", f.output)
		}
		f.output = "json"
	}
	switch f.output {
	case "", "table", "json", "yaml", "wide", "name":
	default:
		return fmt.Errorf("invalid -o value %q: expected one of %s", f.output, strings.Join(outputs, ", "))
	}
	set := 0
	for _, on := range []bool{f.output != "" && f.output != "table", f.format != "", f.quiet} {
		if on {
			set++
		}
	}
	if set > 1 {
		return fmt.Errorf("-o, --format and -q each choose the output: give one")
	}
	if f.format != "" {
		if _, _, _, err := parseFormat(f.format); err != nil {
			return err
		}
	}
	return nil
}

// wide reports whether the table should have its extra columns.
func (f *outputFlags) wide() bool { return f.output == "wide" }

// view is what a verb hands the printer: the same objects in each of the
// forms the flags can ask for.
type view struct {
	// data is what -o json and -o yaml print: the object, or the list
	// document, as the API returns it.
	data any
	// items are what --format runs on, one execution each; nil (a
	// single object, not an empty list) runs it once on data.
	items []any
	// names are what -o name and -q print.
	names []string
	// table writes the default output (wide: with the extra columns);
	// nil prints data as JSON, as docker's inspect does.
	table func(w io.Writer, wide bool) error
}

// itemsOf makes a view's items of a typed slice.
func itemsOf[T any](s []T) []any {
	out := make([]any, len(s))
	for i := range s {
		out[i] = s[i]
	}
	return out
}

// print writes v as the flags ask.
func (f *outputFlags) print(w io.Writer, v view) error {
	switch {
	case f.quiet || f.output == "name":
		return writeLines(w, v.names)
	case f.format != "":
		items := v.items
		if items == nil {
			items = []any{v.data}
		}
		return writeTemplate(w, f.format, items)
	}
	switch f.output {
	case "json":
		return writeJSONIndent(w, v.data)
	case "yaml":
		b, err := yaml.Marshal(v.data)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	if v.table == nil {
		return writeJSONIndent(w, v.data)
	}
	return v.table(w, f.wide())
}

func writeLines(w io.Writer, lines []string) error {
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}

// templateFuncs are docker's template functions that matter for Kanga's
// objects.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"split": strings.Split,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"truncate": func(s string, n int) string {
		if n >= 0 && len(s) > n {
			return s[:n]
		}
		return s
	},
}

// tableFields finds the {{.Field}} actions of a "table" format, whose
// names make its header.
var tableFields = regexp.MustCompile(`\{\{-?\s*\.([A-Za-z0-9_.]+)\s*-?\}\}`)

// parseFormat parses a --format value as docker does: `\t` and `\n` are
// tab and newline, and a "table " prefix prints a header of the field
// names and aligns the columns.
func parseFormat(format string) (tmpl *template.Template, header string, table bool, err error) {
	format = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(format)
	if rest, ok := strings.CutPrefix(format, "table"); ok && (rest == "" || rest[0] == ' ') {
		table = true
		format = strings.TrimSpace(rest)
		header = tableFields.ReplaceAllStringFunc(format, func(m string) string {
			path := tableFields.FindStringSubmatch(m)[1]
			return strings.ToUpper(path[strings.LastIndex(path, ".")+1:])
		})
	}
	tmpl, err = template.New("format").Funcs(templateFuncs).Option("missingkey=error").Parse(format)
	if err != nil {
		return nil, "", false, fmt.Errorf("--format: %w", err)
	}
	return tmpl, header, table, nil
}

// writeTemplate runs format on each item, a line each.
func writeTemplate(w io.Writer, format string, items []any) error {
	tmpl, header, table, err := parseFormat(format)
	if err != nil {
		return err
	}
	out := w
	var tw *tabwriter.Writer
	if table {
		tw = tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		out = tw
		fmt.Fprintln(tw, header)
	}
	for _, it := range items {
		var b strings.Builder
		if err := tmpl.Execute(&b, it); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		if _, err := fmt.Fprintln(out, b.String()); err != nil {
			return err
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// listView is the view of a list of API objects: data is its list
// document, items what --format runs on.
func listView[T any](data any, items []T, name func(T) string, table func(w io.Writer, wide bool) error) view {
	v := view{data: data, items: itemsOf(items), table: table}
	for _, it := range items {
		v.names = append(v.names, name(it))
	}
	return v
}
