package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func samplesOf(d ...int) []Sample {
	out := make([]Sample, len(d))
	for i, x := range d {
		out[i] = Sample{Total: time.Duration(x) * time.Millisecond}
	}
	return out
}

func TestSummarize(t *testing.T) {
	results := []Result{
		{Path: "kanga API", N: 4, Samples: samplesOf(300, 200, 400, 250), Errors: []string{"x: boom"}, Wall: 2 * time.Second},
		{Path: "raw runc", N: 4, Samples: samplesOf(20, 25, 30, 35), Wall: 200 * time.Millisecond},
		{Path: "empty", N: 2, Errors: []string{"prepare: no image"}},
	}
	tests := []struct {
		name      string
		baseline  string
		wantRatio []float64
	}{
		{"with baseline", "raw runc", []float64{10, 1, 0}},
		{"without baseline", "", []float64{0, 0, 0}},
		{"baseline absent", "raw crun", []float64{0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summarize(results, tt.baseline)
			if len(got) != 3 {
				t.Fatalf("got %d summaries", len(got))
			}
			for i, s := range got {
				if s.Ratio != tt.wantRatio[i] {
					t.Errorf("%s ratio = %v, want %v", s.Path, s.Ratio, tt.wantRatio[i])
				}
			}
			k := got[0]
			if k.N != 4 || k.OK != 4 || k.Failed != 0 || k.P50 != 250 || k.P90 != 400 || k.Max != 400 || k.PerMinute != 120 {
				t.Errorf("kanga summary = %+v", k)
			}
			if e := got[2]; e.OK != 0 || e.Failed != 2 || e.P50 != 0 || e.PerMinute != 0 {
				t.Errorf("empty summary = %+v", e)
			}
		})
	}
}

func TestSummarizePhasesKeepOrder(t *testing.T) {
	res := Result{Path: "p", N: 2, Samples: []Sample{
		{Total: 10, Phases: []Phase{{"b", 2 * time.Millisecond}, {"a", 6 * time.Millisecond}}},
		{Total: 10, Phases: []Phase{{"b", 4 * time.Millisecond}, {"a", 8 * time.Millisecond}}},
	}}
	got := Summarize([]Result{res}, "")[0].Phases
	want := []PhaseSummary{{"b", 2, 4}, {"a", 6, 8}}
	if len(got) != len(want) {
		t.Fatalf("phases = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("phase %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func testReport() Report {
	return Report{
		Runtime: "runc", Image: "kanga.test/busybox:latest", N: 4, Concurrency: 2, Baseline: "raw runc",
		Date: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC),
		Paths: Summarize([]Result{
			{Path: "kanga API", N: 4, Samples: []Sample{
				{Total: 300 * time.Millisecond, Phases: []Phase{{"client: create call", 5 * time.Millisecond}}},
				{Total: 200 * time.Millisecond, Phases: []Phase{{"client: create call", 7 * time.Millisecond}}},
			}, Errors: []string{"a: boom", "b: boom"}, Wall: time.Second},
			{Path: "raw runc", N: 4, Samples: samplesOf(20, 20, 40, 50), Wall: 200 * time.Millisecond},
		}, "raw runc"),
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := testReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"runtime runc, image kanga.test/busybox:latest, n=4, concurrency 2",
		"PATH", "X RAW RUNC",
		"kanga API   4   2    200.0ms   300.0ms   300.0ms   300.0ms   120       10.0x",
		"raw runc    4   4    20.0ms    50.0ms    50.0ms    50.0ms    1200      1.0x",
		"kanga API phases (p50 / p90):",
		"client: create call  5.0ms  / 7.0ms",
		"kanga API: 2 failed:",
		"  a: boom",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteTableTruncatesErrors(t *testing.T) {
	r := Report{Paths: []Summary{{Path: "p", N: 8, Failed: 8}}}
	for i := 0; i < 8; i++ {
		r.Paths[0].Errors = append(r.Paths[0].Errors, "same failure")
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(b.String(), "same failure"); got != maxErrorsShown {
		t.Errorf("printed %d failures, want %d", got, maxErrorsShown)
	}
	if !strings.Contains(b.String(), "... and 3 more") {
		t.Errorf("no truncation note:\n%s", b.String())
	}
	// A path with no sample prints dashes, not zeros.
	if !strings.Contains(b.String(), "p      8   0    -") {
		t.Errorf("empty path row:\n%s", b.String())
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := testReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b.String())
	}
	if len(got.Paths) != 2 || got.Paths[0].Ratio != 10 || got.Paths[1].P50 != 20 || got.Baseline != "raw runc" {
		t.Errorf("round trip = %+v", got)
	}
	for _, key := range []string{`"p50Ms"`, `"perMinute"`, `"ratioToBaseline"`, `"phases"`, `"errors"`} {
		if !strings.Contains(b.String(), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}
