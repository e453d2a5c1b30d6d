// Command conformance-report renders the reports of a conformance run
// (scripts/conformance.sh) as the Markdown of docs/conformance.md: the
// run's versions, command and totals, the images, the failures grouped by
// cause, and every test with its result.
//
//	go run ./hack/conformance-report -report DIR [-causes FILE] > docs/conformance.md
//
// Causes are classified by the rules of -causes (default causes.txt next
// to this file): one per line, a Go regular expression, a tab, the cause;
// the first rule matching a failure's message, the test's name or the
// test's log names its cause. Failures no rule matches are grouped under their message's
// first line.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// specReport is the part of ginkgo's JSON SpecReport this reads.
type specReport struct {
	ContainerHierarchyTexts []string
	LeafNodeType            string
	LeafNodeText            string
	State                   string
	StartTime, EndTime      time.Time
	RunTime                 time.Duration
	Failure                 struct {
		Message string
	}
	// CapturedGinkgoWriterOutput is the spec's log: the events and pod
	// statuses that say why a pod did not run.
	CapturedGinkgoWriterOutput string
}

type report struct {
	SuiteDescription string
	StartTime        time.Time
	EndTime          time.Time
	RunTime          time.Duration
	SpecReports      []specReport
}

type rule struct {
	re    *regexp.Regexp
	cause string
}

func readRules(path string) ([]rule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rules []rule
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		expr, cause, ok := strings.Cut(line, "\t")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want REGEXP<TAB>CAUSE", path, n)
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		rules = append(rules, rule{re, strings.TrimSpace(cause)})
	}
	return rules, sc.Err()
}

func name(s specReport) string {
	return strings.TrimSpace(strings.Join(append(append([]string{}, s.ContainerHierarchyTexts...), s.LeafNodeText), " "))
}

// firstLine is the first non-empty line of a failure message, shortened.
func firstLine(msg string) string {
	for l := range strings.SplitSeq(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 160 {
				l = l[:160] + "…"
			}
			return l
		}
	}
	return "(no message)"
}

func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func main() {
	dir := flag.String("report", "", "the run's report directory (report.json, images.tsv)")
	causes := flag.String("causes", "", "classification rules (default causes.txt beside this command)")
	command := flag.String("command", "make conformance", "the command that ran the suite, for the record")
	focus := flag.String("focus", `\[NodeConformance\]`, "the run's ginkgo focus")
	skip := flag.String("skip", `\[Flaky\]|\[Disruptive\]|\[Slow\]`, "the run's ginkgo skip")
	title := flag.String("title", "Kubernetes node conformance of the virtual node", "the document's title")
	note := flag.String("note", "", "a paragraph under the title (Markdown)")
	how := flag.Bool("how", true, "end with how the run works (how.md beside this command)")
	flag.Parse()
	if err := run(os.Stdout, *dir, *causes, *command, *focus, *skip, *title, *note, *how); err != nil {
		fmt.Fprintf(os.Stderr, "conformance-report: %v\n", err)
		os.Exit(1)
	}
}

func run(w io.Writer, dir, causes, command, focus, skip, title, note string, how bool) error {
	if dir == "" {
		return errors.New("-report is required")
	}
	if causes == "" {
		causes = filepath.Join("hack", "conformance-report", "causes.txt")
	}
	rules, err := readRules(causes)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return err
	}
	var reports []report
	if err := json.Unmarshal(b, &reports); err != nil {
		return fmt.Errorf("report.json: %w", err)
	}
	if len(reports) == 0 {
		return errors.New("report.json holds no report")
	}
	rep := reports[0]
	focusRE, err := regexp.Compile(focus)
	if err != nil {
		return fmt.Errorf("focus: %w", err)
	}
	skipRE, err := regexp.Compile(skip)
	if err != nil {
		return fmt.Errorf("skip: %w", err)
	}

	type row struct{ name, result, reason string }
	var rows []row
	totals := map[string]int{}
	byCause := map[string][]string{}
	for _, s := range rep.SpecReports {
		if s.LeafNodeType != "It" {
			continue
		}
		n := name(s)
		if !focusRE.MatchString(n) {
			continue // not selected: not part of this run
		}
		r := row{name: n, result: s.State}
		switch {
		case s.State == "passed":
		case s.State == "skipped" && skipRE.MatchString(n):
			r.result, r.reason = "not run", "excluded by the run's skip ("+skip+")"
		case s.State == "skipped" && strings.TrimSpace(s.Failure.Message) == "":
			// Ginkgo skips, without a word, every spec left when the
			// suite is interrupted.
			r.result, r.reason = "not run", "the suite's timeout ended the run first"
		case s.State == "skipped":
			r.reason = firstLine(s.Failure.Message)
		case s.State == "interrupted" || strings.Contains(s.Failure.Message, "A suite timeout occurred"):
			r.result, r.reason = "not run", "running when the suite's timeout ended the run"
		default:
			r.result = "failed"
			cause := ""
			// Rules in order, each tried on the failure's message, the
			// test's name and its log (where a refused pod's reason is):
			// the node's own refusals, first in the file, win over
			// guesses from a test's name.
		match:
			for _, ru := range rules {
				for _, text := range []string{s.Failure.Message, n, s.CapturedGinkgoWriterOutput} {
					if ru.re.MatchString(text) {
						cause = ru.cause
						break match
					}
				}
			}
			if cause == "" {
				cause = "unclassified: " + firstLine(s.Failure.Message)
			}
			r.reason = cause
			byCause[cause] = append(byCause[cause], n)
		}
		totals[r.result]++
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].name < rows[j].name })

	// The run records the commit it was built from.
	commit := "unknown"
	if b, err := os.ReadFile(filepath.Join(dir, "commit.txt")); err == nil {
		commit = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(w, "# %s\n\n", title)
	if note != "" {
		fmt.Fprintf(w, "%s\n\n", note)
	}
	fmt.Fprintf(w, "Kubernetes' own e2e tests, v1.37.2, unmodified, run against a cluster whose only node is\n")
	fmt.Fprintf(w, "`kanga virtual-node` (see [how it runs](conformance.md#how-it-runs)). Generated by `hack/conformance-report`\n")
	fmt.Fprintf(w, "from the run's ginkgo report; do not edit by hand.\n\n")
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	fmt.Fprintf(w, "| date | %s (UTC) |\n", rep.StartTime.UTC().Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "| Kubernetes (e2e suite, control plane) | v1.37.2 |\n")
	fmt.Fprintf(w, "| Kanga | commit %s |\n", commit)
	fmt.Fprintf(w, "| command | `%s` |\n", command)
	fmt.Fprintf(w, "| ginkgo focus / skip | `%s` / `%s` |\n", focus, skip)
	fmt.Fprintf(w, "| suite run time | %s |\n", rep.RunTime.Round(time.Second))
	total := len(rows)
	fmt.Fprintf(w, "\n**%d tests: %d passed, %d failed, %d skipped by the suite, %d not run.**\n\n", total, totals["passed"], totals["failed"], totals["skipped"], totals["not run"])
	if ran := totals["passed"] + totals["failed"]; ran > 0 {
		fmt.Fprintf(w, "Of the %d that ran, %d passed (%d%%).\n\n", ran, totals["passed"], totals["passed"]*100/ran)
	}

	fmt.Fprintf(w, "## Images\n\nNo outside registry is reachable here: the suite's images are built locally and served\n")
	fmt.Fprintf(w, "by a loopback registry that `KUBE_TEST_REPO_LIST` maps the framework's registries to.\n\n")
	fmt.Fprintf(w, "| image | made of |\n|---|---|\n")
	if b, err := os.ReadFile(filepath.Join(dir, "images.tsv")); err == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for _, l := range lines[1:] {
			ref, how, _ := strings.Cut(l, "\t")
			fmt.Fprintf(w, "| `%s` | %s |\n", ref, cell(how))
		}
	}

	fmt.Fprintf(w, "\n## Failures by cause\n\n")
	var cs []string
	for c := range byCause {
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool {
		if len(byCause[cs[i]]) != len(byCause[cs[j]]) {
			return len(byCause[cs[i]]) > len(byCause[cs[j]])
		}
		return cs[i] < cs[j]
	})
	for _, c := range cs {
		fmt.Fprintf(w, "### %s (%d)\n\n", cell(c), len(byCause[c]))
		sort.Strings(byCause[c])
		for _, n := range byCause[c] {
			fmt.Fprintf(w, "- %s\n", cell(n))
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintf(w, "## Every test\n\n| test | result | reason |\n|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s |\n", cell(r.name), r.result, cell(r.reason))
	}
	if b, err := os.ReadFile(filepath.Join("hack", "conformance-report", "how.md")); err == nil && how {
		fmt.Fprintf(w, "\n%s", b)
	}
	return nil
}
