package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

// TestObservability scrapes the API's /metrics of a kanga up around
// starts and a removal: the start histogram counts the starts, the request
// counter the creates, a running instance has its per-instance series and
// loses them when removed, and a tenant's token, even with every tenant
// scope, is refused. Then kanga events shows, filters and follows the
// instances' events, and only the tenant's own.
func TestObservability(t *testing.T) {
	p := startPlatform(t)
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	tok := p.newTenant("met-a")

	before := scrape(t, cfg.Addr, cfg.Token)
	names := []string{"met-1", "met-2"}
	for _, n := range names {
		p.mustAs(tok, "run", "-d", "--name", n, "kanga.test/busybox", "sleep", "1000")
	}
	for _, n := range names {
		p.runningAs(tok, n)
	}
	after := scrape(t, cfg.Addr, cfg.Token)

	t.Run("start histogram", func(t *testing.T) {
		got := histCount(after, "kanga_instance_start_duration_seconds", nil) - histCount(before, "kanga_instance_start_duration_seconds", nil)
		if got != uint64(len(names)) {
			t.Errorf("kanga_instance_start_duration_seconds counted %d starts, want %d", got, len(names))
		}
		// The pool is off (startPlatform): both were cold starts.
		if c := histCount(after, "kanga_instance_start_duration_seconds", map[string]string{"path": "cold"}); c < uint64(len(names)) {
			t.Errorf("path=cold counted %d, want at least %d", c, len(names))
		}
		if c := histCount(after, "kanga_instance_start_step_duration_seconds", map[string]string{"step": "task-start"}); c < uint64(len(names)) {
			t.Errorf("step=task-start counted %d, want at least %d", c, len(names))
		}
	})

	t.Run("request counter", func(t *testing.T) {
		lbl := map[string]string{"method": "POST", "route": "/v1/instances"}
		got := sumValue(after, "kanga_api_requests_total", lbl) - sumValue(before, "kanga_api_requests_total", lbl)
		if got != float64(len(names)) {
			t.Errorf("kanga_api_requests_total{POST /v1/instances} moved by %v, want %d", got, len(names))
		}
		if n := histCount(after, "kanga_api_request_duration_seconds", lbl); n < uint64(len(names)) {
			t.Errorf("kanga_api_request_duration_seconds{POST /v1/instances} counted %d, want at least %d", n, len(names))
		}
		if placed := sumValue(after, "kanga_scheduler_placements_total", nil) - sumValue(before, "kanga_scheduler_placements_total", nil); placed != float64(len(names)) {
			t.Errorf("kanga_scheduler_placements_total moved by %v, want %d", placed, len(names))
		}
		if v := sumValue(after, "kanga_host_ready", map[string]string{"host": "it-host"}); v != 1 {
			t.Errorf("kanga_host_ready{host=it-host} = %v, want 1", v)
		}
	})

	series := map[string]string{"tenant": "met-a", "name": "met-1"}
	t.Run("per-instance series", func(t *testing.T) {
		// The sampler's first sample comes at once; a scrape reads it.
		var mfs map[string]*dto.MetricFamily
		p.eventually("met-1's series", 30*time.Second, func() bool {
			mfs = scrape(t, cfg.Addr, cfg.Token)
			return len(matching(mfs, "container_cpu_usage_seconds_total", series)) == 1
		})
		for _, name := range []string{"container_memory_usage_bytes", "container_network_receive_bytes_total", "container_threads"} {
			if n := len(matching(mfs, name, series)); n != 1 {
				t.Errorf("%s{tenant=met-a,name=met-1}: %d series, want 1", name, n)
			}
		}
		if v := sumValue(mfs, "container_threads", series); v < 1 {
			t.Errorf("container_threads of a running sleep = %v, want at least 1", v)
		}
	})

	t.Run("series go with rm", func(t *testing.T) {
		p.mustAs(tok, "rm", "-f", "met-1")
		p.eventually("met-1's series to go", 30*time.Second, func() bool {
			return len(matching(scrape(t, cfg.Addr, cfg.Token), "container_cpu_usage_seconds_total", series)) == 0
		})
		other := map[string]string{"tenant": "met-a", "name": "met-2"}
		if n := len(matching(scrape(t, cfg.Addr, cfg.Token), "container_cpu_usage_seconds_total", other)); n != 1 {
			t.Errorf("met-2, still running, has %d series, want 1", n)
		}
	})

	t.Run("tenant token refused", func(t *testing.T) {
		code, body := get(t, cfg.Addr+"/metrics", tok)
		if code != http.StatusForbidden || !strings.Contains(body, "metrics:read") {
			t.Errorf("GET /metrics with a tenant's token: %d %s, want 403 naming metrics:read", code, body)
		}
		if code, _ := get(t, cfg.Addr+"/metrics", ""); code != http.StatusUnauthorized {
			t.Errorf("GET /metrics without a token: %d, want 401", code)
		}
	})

	t.Run("events", func(t *testing.T) {
		events := func(token string, args ...string) []api.EventRecord {
			t.Helper()
			out := p.mustAs(token, append([]string{"events", "-o", "json"}, args...)...)
			var recs []api.EventRecord
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if l == "" {
					continue
				}
				var r api.EventRecord
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatalf("kanga events line %q: %v", l, err)
				}
				recs = append(recs, r)
			}
			return recs
		}
		has := func(recs []api.EventRecord, inst, reason string) bool {
			return slices.ContainsFunc(recs, func(r api.EventRecord) bool { return r.Instance == inst && r.Reason == reason })
		}
		all := events(tok)
		if !has(all, "met-2", "Scheduled") {
			t.Errorf("kanga events lacks met-2's Scheduled event: %+v", all)
		}
		for _, r := range events(tok, "--type", "Warning") {
			if r.Type != api.EventWarning {
				t.Errorf("--type Warning printed %+v", r)
			}
		}
		other := p.newTenant("met-b")
		if recs := events(other); len(recs) != 0 {
			t.Errorf("another tenant sees events: %+v", recs)
		}

		// -f: an instance started while following shows up.
		cmd := exec.Command(p.bin, "events", "-f", "-o", "json")
		cmd.Env = append(p.env(), "KANGA_TOKEN="+tok)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		found := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var r api.EventRecord
				if json.Unmarshal(sc.Bytes(), &r) == nil && r.Instance == "met-3" && r.Reason == "Scheduled" {
					found <- true
					return
				}
			}
			found <- false
		}()
		p.mustAs(tok, "run", "-d", "--name", "met-3", "kanga.test/busybox", "sleep", "1000")
		select {
		case ok := <-found:
			if !ok {
				t.Error("kanga events -f ended before met-3's Scheduled event")
			}
		case <-time.After(60 * time.Second):
			t.Error("kanga events -f did not print met-3's Scheduled event within 60 s")
		}
	})
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrape reads the API's /metrics as the administrator.
func scrape(t *testing.T, addr, token string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, addr+"/metrics", token)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// matching returns the metrics of family name whose labels include lbl.
func matching(mfs map[string]*dto.MetricFamily, name string, lbl map[string]string) []*dto.Metric {
	mf := mfs[name]
	if mf == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		ok := true
		for k, v := range lbl {
			if have[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

func histCount(mfs map[string]*dto.MetricFamily, name string, lbl map[string]string) uint64 {
	var n uint64
	for _, m := range matching(mfs, name, lbl) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

func sumValue(mfs map[string]*dto.MetricFamily, name string, lbl map[string]string) float64 {
	var v float64
	for _, m := range matching(mfs, name, lbl) {
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		default:
			panic(fmt.Sprintf("%s is neither a counter nor a gauge", name))
		}
	}
	return v
}
