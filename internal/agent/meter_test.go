package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/hostcontract"
)

// fakeSink stands in for the store: it keeps records by UID and sequence
// number, as the store's keys do, and fails while told to.
type fakeSink struct {
	mu    sync.Mutex
	recs  map[string]map[int64]api.UsageRecord
	calls int
	fail  bool
	// changed counts records sent again with other content: the store
	// would keep both (their keys differ), counting the time twice.
	changed int
}

func (f *fakeSink) PutUsage(_ context.Context, _ string, recs []api.UsageRecord) ([]hostcontract.UsageRefusal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail {
		return nil, errors.New("control plane away")
	}
	if f.recs == nil {
		f.recs = map[string]map[int64]api.UsageRecord{}
	}
	for _, r := range recs {
		if f.recs[r.UID] == nil {
			f.recs[r.UID] = map[int64]api.UsageRecord{}
		}
		if old, ok := f.recs[r.UID][r.Seq]; ok && !reflect.DeepEqual(old, r) {
			f.changed++
		}
		f.recs[r.UID][r.Seq] = r
	}
	return nil, nil
}

// check verifies uid's records cover [from, to) without gap or overlap,
// end with one final record, and returns their totals.
func (f *fakeSink) check(t *testing.T, uid string, from, to time.Time) (secs, cpuSecs float64) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	recs := f.recs[uid]
	if f.changed > 0 {
		t.Fatalf("%d records were sent again with other content", f.changed)
	}
	at := from
	for seq := int64(0); seq < int64(len(recs)); seq++ {
		r, ok := recs[seq]
		if !ok {
			t.Fatalf("record %d missing of %d", seq, len(recs))
		}
		if !r.Start.Equal(at) {
			t.Fatalf("record %d starts at %s, the one before ended at %s", seq, r.Start, at)
		}
		var ms uint64
		for _, p := range r.Points {
			ms += p[0]
			cpuSecs += float64(p[1]) / 1e9
		}
		if got := r.End.Sub(r.Start).Milliseconds(); uint64(got) != ms {
			t.Fatalf("record %d: points cover %d ms of %d", seq, ms, got)
		}
		if r.Final != (seq == int64(len(recs))-1) {
			t.Fatalf("record %d of %d: final = %v", seq, len(recs), r.Final)
		}
		at = r.End
	}
	if !at.Equal(to) {
		t.Fatalf("records end at %s, want %s", at, to)
	}
	return to.Sub(from).Seconds(), cpuSecs
}

// fakeCounters are an instance's cgroup and interface counters: CPU
// grows at 0.5 cores, egress 1000 B/s, from start.
type fakeCounters struct {
	mu    sync.Mutex
	start time.Time
	now   time.Time
}

func (c *fakeCounters) at(t time.Time) sample {
	d := t.Sub(c.start)
	return sample{InstanceStats: api.InstanceStats{Time: t, CPUUsageNanos: uint64(d.Nanoseconds() / 2), NetTxBytes: uint64(d.Seconds() * 1000), MemoryUsage: 64 << 20}}
}

func (c *fakeCounters) sample(context.Context, string) (sample, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at(c.now), nil
}

func (c *fakeCounters) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func testMeter(t *testing.T, path string, sink UsageSink, c *fakeCounters) *meter {
	m := newMeter("h1", path, sink, c.sample, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := m.load(); err != nil {
		t.Fatal(err)
	}
	return m
}

var meterT0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

func meterInst() *api.Instance {
	return &api.Instance{Name: "web", Tenant: "acme", UID: "uid-1", Spec: api.InstanceSpec{Resources: api.Resources{CPU: "500m", Memory: "128Mi"}}}
}

// An instance that ran 20.3 s: the exit trims the point that overshot
// it, records cover exactly its run, promised vCPU-seconds are 0.5 x 20.3.
func TestMeterRunTime(t *testing.T) {
	ctx := t.Context()
	sink := &fakeSink{}
	c := &fakeCounters{start: meterT0}
	m := testMeter(t, filepath.Join(t.TempDir(), "meter.json"), sink, c)
	c.set(meterT0)
	m.begin(ctx, meterInst(), parsed(t, meterInst().Spec.Resources), meterT0, true)
	exit := meterT0.Add(20300 * time.Millisecond)
	for i := 1; i <= 21; i++ {
		now := meterT0.Add(time.Duration(i)*time.Second + 7*time.Millisecond)
		c.set(now)
		m.observe("uid-1", c.at(now))
		if i%10 == 0 {
			if err := m.flush(ctx, now.Add(-meterHoldback)); err != nil {
				t.Fatal(err)
			}
		}
	}
	m.end(ctx, "uid-1", exit) // the runner learns of the exit after the 21 s sample
	if err := m.flush(ctx, exit); err != nil {
		t.Fatal(err)
	}
	secs, cpu := sink.check(t, "uid-1", meterT0, exit)
	if secs != 20.3 {
		t.Fatalf("metered %v s, want 20.3", secs)
	}
	if cpu < 10.1 || cpu > 10.16 {
		t.Fatalf("used %.3f vCPU-s, want about 10.15", cpu)
	}
	if len(m.insts) != 0 {
		t.Fatalf("meter keeps %d instances after the final record went", len(m.insts))
	}
}

// kill -9 at each point of the cycle: before a cut was written, after it
// was written but before it was sent, after it was sent but before the
// file knew. Each time a new meter on the same file resumes; the records
// still cover the run exactly once.
func TestMeterCrashes(t *testing.T) {
	for _, crash := range []string{"before the cut", "cut but not sent", "sent but not recorded"} {
		t.Run(crash, func(t *testing.T) {
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), "meter.json")
			sink := &fakeSink{}
			c := &fakeCounters{start: meterT0}
			m := testMeter(t, path, sink, c)
			c.set(meterT0)
			m.begin(ctx, meterInst(), parsed(t, meterInst().Spec.Resources), meterT0, true)
			sec := func(i int) time.Time { return meterT0.Add(time.Duration(i) * time.Second) }
			for i := 1; i <= 8; i++ {
				m.observe("uid-1", c.at(sec(i)))
			}
			if err := m.flush(ctx, sec(5)); err != nil { // a normal cycle
				t.Fatal(err)
			}
			for i := 9; i <= 14; i++ {
				m.observe("uid-1", c.at(sec(i)))
			}
			switch crash {
			case "cut but not sent":
				sink.fail = true
				_ = m.flush(ctx, sec(12))
				sink.fail = false
			case "sent but not recorded":
				// The records reached the store; the file still lists
				// them as pending (the process died before rewriting it).
				m.mu.Lock()
				m.cutLocked(m.insts["uid-1"], sec(12))
				m.mu.Unlock()
				if err := m.persist(); err != nil {
					t.Fatal(err)
				}
				pending := append([]api.UsageRecord(nil), m.pending...)
				if _, err := sink.PutUsage(ctx, "h1", pending); err != nil {
					t.Fatal(err)
				}
			}
			// kill -9: m is gone with its memory. The containers ran on;
			// the next agent starts at 19 s and adopts them.
			c.set(sec(19))
			m2 := testMeter(t, path, sink, c)
			m2.begin(ctx, meterInst(), parsed(t, meterInst().Spec.Resources), time.Time{}, false)
			for i := 20; i <= 25; i++ {
				m2.observe("uid-1", c.at(sec(i)))
			}
			exit := sec(25).Add(-400 * time.Millisecond)
			m2.end(ctx, "uid-1", exit)
			if err := m2.flush(ctx, exit); err != nil {
				t.Fatal(err)
			}
			secs, cpu := sink.check(t, "uid-1", meterT0, exit)
			if secs != 24.6 || cpu < 12.29 || cpu > 12.31 {
				t.Fatalf("metered %v s and %.3f vCPU-s used, want 24.6 s and 12.3", secs, cpu)
			}
		})
	}
}

// While the sink fails records wait on the host, in order; an instance's
// points in memory stay bounded and keep their totals.
func TestMeterBacklog(t *testing.T) {
	ctx := t.Context()
	sink := &fakeSink{fail: true}
	c := &fakeCounters{start: meterT0}
	m := testMeter(t, filepath.Join(t.TempDir(), "meter.json"), sink, c)
	m.begin(ctx, meterInst(), parsed(t, meterInst().Spec.Resources), meterT0, true)
	n := 3 * meterMaxPoints
	for i := 1; i <= n; i++ {
		m.observe("uid-1", c.at(meterT0.Add(time.Duration(i)*time.Second)))
		if i%100 == 0 {
			_ = m.flush(ctx, meterT0.Add(time.Duration(i-3)*time.Second))
		}
	}
	if len(m.pending) == 0 {
		t.Fatal("no records kept while the sink failed")
	}
	sink.fail = false
	end := meterT0.Add(time.Duration(n) * time.Second)
	m.end(ctx, "uid-1", end)
	if err := m.flush(ctx, end); err != nil {
		t.Fatal(err)
	}
	if secs, _ := sink.check(t, "uid-1", meterT0, end); secs != float64(n) {
		t.Fatalf("metered %v s, want %d", secs, n)
	}

	// Points in memory with no cut at all: bounded, totals kept.
	mi := &meterInstance{Cut: meterCut{At: meterT0}}
	mi.live = mi.Cut
	for i := 1; i <= 5*meterMaxPoints; i++ {
		s := c.at(meterT0.Add(time.Duration(i) * time.Second))
		mi.accrue(s.Time, s.CPUUsageNanos, s.NetTxBytes, s.MemoryUsage)
	}
	if len(mi.points) > meterMaxPoints {
		t.Fatalf("%d points in memory, want at most %d", len(mi.points), meterMaxPoints)
	}
	var total time.Duration
	var tx uint64
	for _, p := range mi.points {
		total += p.end.Sub(p.start)
		tx += p.tx
	}
	if total != time.Duration(5*meterMaxPoints)*time.Second || tx != uint64(5*meterMaxPoints)*1000 {
		t.Fatalf("coarsened points cover %s and %d B, want %ds and %d B", total, tx, 5*meterMaxPoints, 5*meterMaxPoints*1000)
	}
}

// An instance whose agent was down through its end: the first thing the
// new agent does is end it, at its exit, from the last cut.
func TestMeterEndWhileDown(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meter.json")
	sink := &fakeSink{}
	c := &fakeCounters{start: meterT0}
	m := testMeter(t, path, sink, c)
	m.begin(ctx, meterInst(), parsed(t, meterInst().Spec.Resources), meterT0, true)
	for i := 1; i <= 12; i++ {
		m.observe("uid-1", c.at(meterT0.Add(time.Duration(i)*time.Second)))
	}
	if err := m.flush(ctx, meterT0.Add(9*time.Second)); err != nil {
		t.Fatal(err)
	}
	exit := meterT0.Add(15500 * time.Millisecond)
	c.set(meterT0.Add(40 * time.Second))
	m2 := testMeter(t, path, sink, c)
	m2.end(ctx, "uid-1", exit)
	if err := m2.flush(ctx, exit); err != nil {
		t.Fatal(err)
	}
	if secs, _ := sink.check(t, "uid-1", meterT0, exit); secs != 15.5 {
		t.Fatalf("metered %v s, want 15.5", secs)
	}
	// An instance that left no record and is gone: forgotten at its cut.
	m3 := testMeter(t, filepath.Join(t.TempDir(), "meter.json"), sink, c)
	inst := meterInst()
	inst.UID = "uid-2"
	m3.begin(ctx, inst, parsed(t, inst.Spec.Resources), meterT0, true)
	m3.forget(ctx, map[string]bool{})
	if err := m3.flush(ctx, meterT0); err != nil {
		t.Fatal(err)
	}
	if secs, _ := sink.check(t, "uid-2", meterT0, meterT0); secs != 0 {
		t.Fatalf("forgotten instance metered %v s", secs)
	}
}

// A record is sent only once it is in the file: one sent before would be
// cut anew, with other content, after a crash.
func TestMeterSendsOnlyDurableRecords(t *testing.T) {
	ctx := t.Context()
	sink := &fakeSink{}
	c := &fakeCounters{start: meterT0}
	m := testMeter(t, filepath.Join(t.TempDir(), "meter.json"), sink, c)
	m.begin(ctx, meterInst(), parsed(t, meterInst().Spec.Resources), meterT0, true)
	for i := 1; i <= 5; i++ {
		m.observe("uid-1", c.at(meterT0.Add(time.Duration(i)*time.Second)))
	}
	m.mu.Lock()
	m.cutLocked(m.insts["uid-1"], meterT0.Add(5*time.Second))
	m.mu.Unlock()
	if err := m.send(ctx); err != nil || sink.calls != 0 {
		t.Fatalf("send before the record was written: %d calls, %v", sink.calls, err)
	}
	if err := m.persist(); err != nil {
		t.Fatal(err)
	}
	if err := m.send(ctx); err != nil || sink.calls != 1 {
		t.Fatalf("send after the record was written: %d calls, %v", sink.calls, err)
	}
}

// Samplers, the runner's end and flushes run at once (go test -race).
func TestMeterConcurrent(t *testing.T) {
	ctx := t.Context()
	sink := &fakeSink{}
	c := &fakeCounters{start: meterT0}
	m := testMeter(t, filepath.Join(t.TempDir(), "meter.json"), sink, c)
	var wg sync.WaitGroup
	for u := range 4 {
		inst := meterInst()
		inst.UID = fmt.Sprintf("uid-%d", u)
		m.begin(ctx, inst, parsed(t, inst.Spec.Resources), meterT0, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= 50; i++ {
				m.observe(inst.UID, c.at(meterT0.Add(time.Duration(i)*time.Second)))
			}
			m.end(ctx, inst.UID, meterT0.Add(50*time.Second))
		}()
	}
	for range 20 {
		_ = m.flush(ctx, meterT0.Add(45*time.Second))
	}
	wg.Wait()
	if err := m.flush(ctx, meterT0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for u := range 4 {
		if secs, _ := sink.check(t, fmt.Sprintf("uid-%d", u), meterT0, meterT0.Add(50*time.Second)); secs != 50 {
			t.Fatalf("uid-%d metered %v s, want 50", u, secs)
		}
	}
}
