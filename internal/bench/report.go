package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one benchmark invocation: every path run with
// the same workload, n and concurrency.
type Report struct {
	Runtime     string    `json:"runtime"`
	Image       string    `json:"image"`
	N           int       `json:"n"`
	Concurrency int       `json:"concurrency"`
	Date        time.Time `json:"date"`
	// IDPrefix starts the name of every instance and container the run
	// made, to find leftovers if a cleanup failed.
	IDPrefix string `json:"idPrefix,omitempty"`
	// Baseline is the path whose p50 the ratios divide by; empty when the
	// baselines were not run.
	Baseline string    `json:"baseline,omitempty"`
	Paths    []Summary `json:"paths"`
}

// Summary condenses one Result. Durations are milliseconds.
type Summary struct {
	Path   string  `json:"path"`
	N      int     `json:"n"`
	OK     int     `json:"ok"`
	Failed int     `json:"failed"`
	P50    float64 `json:"p50Ms"`
	P90    float64 `json:"p90Ms"`
	P99    float64 `json:"p99Ms"`
	Max    float64 `json:"maxMs"`
	WallMs float64 `json:"wallMs"`
	// PerMinute is successful starts per minute of the batch's wall time.
	PerMinute float64 `json:"perMinute"`
	// Ratio is this path's p50 over the baseline's p50; 0 when there is
	// no baseline.
	Ratio float64 `json:"ratioToBaseline,omitempty"`
	// Retries counts the requests the server refused as busy (429) and
	// the client sent again, over RetriedStarts of the successful starts.
	Retries       int            `json:"retries,omitempty"`
	RetriedStarts int            `json:"retriedStarts,omitempty"`
	Phases        []PhaseSummary `json:"phases,omitempty"`
	Errors        []string       `json:"errors,omitempty"`
}

// PhaseSummary condenses one phase over all samples of a path.
type PhaseSummary struct {
	Name string  `json:"name"`
	P50  float64 `json:"p50Ms"`
	P90  float64 `json:"p90Ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summarize condenses results. baseline names the path whose p50 the
// ratios divide by; a baseline that is absent or has no sample gives no
// ratios.
func Summarize(results []Result, baseline string) []Summary {
	var base time.Duration
	for _, r := range results {
		if r.Path == baseline {
			base = Percentile(totals(r.Samples), 50)
		}
	}
	out := make([]Summary, 0, len(results))
	for _, r := range results {
		t := totals(r.Samples)
		slices.Sort(t)
		s := Summary{
			Path:      r.Path,
			N:         r.N,
			OK:        len(r.Samples),
			Failed:    r.N - len(r.Samples),
			P50:       ms(percentileSorted(t, 50)),
			P90:       ms(percentileSorted(t, 90)),
			P99:       ms(percentileSorted(t, 99)),
			Max:       ms(percentileSorted(t, 100)),
			WallMs:    ms(r.Wall),
			PerMinute: PerMinute(len(r.Samples), r.Wall),
			Ratio:     Ratio(percentileSorted(t, 50), base),
			Phases:    summarizePhases(r.Samples),
			Errors:    r.Errors,
		}
		for _, sm := range r.Samples {
			s.Retries += sm.Retries
			if sm.Retries > 0 {
				s.RetriedStarts++
			}
		}
		out = append(out, s)
	}
	return out
}

func totals(samples []Sample) []time.Duration {
	t := make([]time.Duration, len(samples))
	for i, s := range samples {
		t[i] = s.Total
	}
	return t
}

// summarizePhases keeps phases in the order they first appear, so a path
// that reports them in time order is printed in time order.
func summarizePhases(samples []Sample) []PhaseSummary {
	var order []string
	byName := map[string][]time.Duration{}
	for _, s := range samples {
		for _, p := range s.Phases {
			if _, ok := byName[p.Name]; !ok {
				order = append(order, p.Name)
			}
			byName[p.Name] = append(byName[p.Name], p.Duration)
		}
	}
	out := make([]PhaseSummary, 0, len(order))
	for _, name := range order {
		d := byName[name]
		out = append(out, PhaseSummary{Name: name, P50: ms(Percentile(d, 50)), P90: ms(Percentile(d, 90))})
	}
	return out
}

// maxErrorsShown bounds the failures printed per path: a broken setup
// fails every start with the same message.
const maxErrorsShown = 5

// WriteTable prints the report as an aligned table, followed by the phase
// breakdown of paths that report one and by the first failures.
func (r Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "runtime %s, image %s, n=%d, concurrency %d", r.Runtime, r.Image, r.N, r.Concurrency)
	if r.IDPrefix != "" {
		fmt.Fprintf(w, ", ids %s*", r.IDPrefix)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	ratioHead := "X BASELINE"
	if r.Baseline != "" {
		ratioHead = "X " + strings.ToUpper(r.Baseline)
	}
	fmt.Fprintf(tw, "PATH\tN\tOK\tP50\tP90\tP99\tMAX\tPER MIN\t%s\n", ratioHead)
	for _, s := range r.Paths {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Path, s.N, s.OK,
			fmtMs(s.P50, s.OK), fmtMs(s.P90, s.OK), fmtMs(s.P99, s.OK), fmtMs(s.Max, s.OK),
			fmtRate(s.PerMinute, s.OK), fmtRatio(s.Ratio))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Paths {
		if s.Retries > 0 {
			fmt.Fprintf(w, "%s: the server was busy (429) %d times; %d of %d starts retried and are timed with their retries\n",
				s.Path, s.Retries, s.RetriedStarts, s.OK)
		}
	}
	for _, s := range r.Paths {
		if len(s.Phases) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s phases (p50 / p90):\n", s.Path)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, p := range s.Phases {
			fmt.Fprintf(tw, "  %s\t%s\t/ %s\n", p.Name, fmtMs(p.P50, 1), fmtMs(p.P90, 1))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, s := range r.Paths {
		if len(s.Errors) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s: %d failed:\n", s.Path, len(s.Errors))
		for i, e := range s.Errors {
			if i == maxErrorsShown {
				fmt.Fprintf(w, "  ... and %d more\n", len(s.Errors)-maxErrorsShown)
				break
			}
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	return nil
}

// WriteJSON prints the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func fmtMs(v float64, ok int) string {
	if ok == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", v)
}

func fmtRate(v float64, ok int) string {
	if ok == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtRatio(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", v)
}
