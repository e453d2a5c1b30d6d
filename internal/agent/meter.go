package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/atomicfile"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/model"
)

// UsageSink takes the host's usage records: the store (kanga up) or the
// link to the control plane (kanga agent). A record sent twice counts
// once; refusals are final.
type UsageSink interface {
	PutUsage(ctx context.Context, host string, recs []api.UsageRecord) ([]hostcontract.UsageRefusal, error)
}

// Metering. Each running instance accrues one point per sample (every
// second): CPU nanoseconds and egress bytes from the cumulative cgroup and
// interface counters, memory from the cgroup's usage, the promised
// resources from the spec. Every meterFlushInterval the host cuts the
// points into one record per instance, numbered per instance, and writes
// the instances' counters as of the cut together with the records not yet
// sent to meter.json (atomically, fsynced) before it sends them: a record
// is fixed before anyone sees it, so one sent again after a crash is the
// same record and counts once (the store keys it by UID and number).
// Points after the last cut live in memory only: after a crash the first
// sample accrues one point from the cut to then, whose CPU and egress are
// exact (cumulative counters) and whose promise is exact (its duration);
// only the memory of that span is estimated, from the sample. So nothing
// is lost and nothing counts twice, whatever is killed when. An instance's
// run ends at its last container's exit (a point that overshot it is
// trimmed) or when it is torn down; its last record is Final.
const (
	meterFlushInterval = 10 * time.Second
	// meterHoldback keeps the newest points on the host at a cut, so that
	// an exit the runner has yet to handle can still trim them.
	meterHoldback = 3 * time.Second
	// meterMaxPoints bounds an instance's points in memory; beyond, the
	// oldest are merged pairwise (totals kept, resolution halved), as
	// when records cannot be cut because the control plane is away.
	meterMaxPoints = 900
	// meterMaxPending bounds the records kept for sending.
	meterMaxPending = 5000
	meterSendBatch  = 200
	// meterFinalWait bounds how long a teardown waits to send the final
	// record; it is sent later otherwise.
	meterFinalWait = 10 * time.Second
)

// meterPoint is one interval in memory, with the counters at its end.
type meterPoint struct {
	start, end time.Time
	cpu, tx    uint64 // used in the interval
	mem        uint64 // bytes, average
	cpuCum     uint64 // counters at end
	txCum      uint64
}

// meterCut is where the last record ended: the counters then.
type meterCut struct {
	At  time.Time `json:"at"`
	CPU uint64    `json:"cpu"`
	Tx  uint64    `json:"tx"`
}

// meterInstance is an instance's meter; the exported fields are stored.
type meterInstance struct {
	Tenant      string   `json:"tenant"`
	Instance    string   `json:"instance"`
	UID         string   `json:"uid"`
	CPUMilli    int64    `json:"cpuMilli"`
	MemoryBytes int64    `json:"memoryBytes"`
	Cut         meterCut `json:"cut"`
	NextSeq     int64    `json:"nextSeq"`
	// Ended: the run ended at EndAt; FinalCut: its last record is cut.
	Ended    bool      `json:"ended,omitempty"`
	EndAt    time.Time `json:"endAt,omitempty"`
	FinalCut bool      `json:"finalCut,omitempty"`

	live   meterCut // counters as of the last point (or the cut)
	mem    uint64   // memory of the last sample
	points []meterPoint
}

type meterFile struct {
	Instances map[string]*meterInstance `json:"instances"`
	Pending   []api.UsageRecord         `json:"pending"`
}

// meter keeps the host's usage records.
type meter struct {
	host string
	path string
	sink UsageSink
	log  *slog.Logger
	now  func() time.Time
	// sample reads an instance's counters now (the cgroup may be gone).
	sample func(ctx context.Context, uid string) (sample, error)

	mu      sync.Mutex
	insts   map[string]*meterInstance
	pending []api.UsageRecord
	// durable counts the leading pending records that are in the file:
	// only those may be sent.
	durable int
	dirty   bool
	// persisting orders the file's writes, which happen outside mu (an
	// fsync on a busy disk must not hold up the samplers and runners).
	persisting sync.Mutex
	// sending holds a token while records go out: one send at a time, in
	// order; a waiter gives up when its context ends.
	sending chan struct{}
}

func newMeter(host, path string, sink UsageSink, sample func(context.Context, string) (sample, error), log *slog.Logger) *meter {
	return &meter{host: host, path: path, sink: sink, sample: sample, log: log, now: time.Now,
		insts: map[string]*meterInstance{}, sending: make(chan struct{}, 1)}
}

func ms(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// load reads the meter file a previous run left.
func (m *meter) load() error {
	b, err := os.ReadFile(m.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var f meterFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%s: %w", m.path, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for uid, mi := range f.Instances {
		mi.live = mi.Cut
		m.insts[uid] = mi
	}
	m.pending = f.Pending
	m.durable = len(f.Pending)
	return nil
}

// promised is what an instance with resources r was promised.
func promised(r model.Resources) (cpuMilli, memBytes int64) {
	if r.DedicatedCores > 0 {
		return int64(r.DedicatedCores) * 1000, r.Memory
	}
	return r.MilliCPU, r.Memory
}

// begin starts metering an instance whose containers run since
// startedAt, or resumes the meter a previous run of the agent left. A
// fresh start takes the counters now as its baseline (a recycled sandbox
// or a warm container brings counts of its own); an instance adopted
// without a meter (the agent died before it first wrote one) counts its
// cgroup's whole history, which is exactly its run.
func (m *meter) begin(ctx context.Context, inst *api.Instance, res model.Resources, startedAt time.Time, fresh bool) {
	m.mu.Lock()
	if _, ok := m.insts[inst.UID]; ok {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	cpu, mem := promised(res)
	mi := &meterInstance{Tenant: inst.Tenant, Instance: inst.Name, UID: inst.UID, CPUMilli: cpu, MemoryBytes: mem,
		Cut: meterCut{At: ms(startedAt)}}
	if fresh {
		if s, err := m.sample(ctx, inst.UID); err == nil {
			mi.Cut.CPU, mi.Cut.Tx, mi.mem = s.CPUUsageNanos, s.NetTxBytes, s.MemoryUsage
		}
	}
	mi.live = mi.Cut
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.insts[inst.UID]; !ok {
		m.insts[inst.UID] = mi
		m.dirty = true
	}
}

// observe accrues the point from the last one to s.
func (m *meter) observe(uid string, s sample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mi := m.insts[uid]
	if mi == nil || mi.Ended {
		return
	}
	mi.accrue(ms(s.Time), s.CPUUsageNanos, s.NetTxBytes, s.MemoryUsage)
}

// delta is the growth of a cumulative counter; one that went backwards
// (a cgroup or interface made anew) counts from zero.
func delta(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func (mi *meterInstance) accrue(at time.Time, cpu, tx, mem uint64) {
	if !at.After(mi.live.At) {
		return
	}
	mi.points = append(mi.points, meterPoint{start: mi.live.At, end: at, cpu: delta(cpu, mi.live.CPU), tx: delta(tx, mi.live.Tx),
		mem: mem, cpuCum: cpu, txCum: tx})
	mi.live = meterCut{At: at, CPU: cpu, Tx: tx}
	mi.mem = mem
	if len(mi.points) > meterMaxPoints {
		mi.coarsen()
	}
}

// coarsen merges the oldest half of the points pairwise.
func (mi *meterInstance) coarsen() {
	half := len(mi.points) / 2
	var out []meterPoint
	for i := 0; i+1 < half; i += 2 {
		a, b := mi.points[i], mi.points[i+1]
		da, db := a.end.Sub(a.start), b.end.Sub(b.start)
		avg := a.mem
		if da+db > 0 {
			avg = uint64((float64(a.mem)*float64(da) + float64(b.mem)*float64(db)) / float64(da+db))
		}
		out = append(out, meterPoint{start: a.start, end: b.end, cpu: a.cpu + b.cpu, tx: a.tx + b.tx, mem: avg, cpuCum: b.cpuCum, txCum: b.txCum})
	}
	if half%2 == 1 {
		out = append(out, mi.points[half-1])
	}
	mi.points = append(out, mi.points[half:]...)
}

// end ends an instance's run at at: points past it are trimmed, and the
// span from the last point to it is accrued from a fresh reading (its
// containers have exited, so the counters hold all they used).
func (m *meter) end(ctx context.Context, uid string, at time.Time) {
	m.mu.Lock()
	mi := m.insts[uid]
	if mi == nil || mi.Ended {
		m.mu.Unlock()
		return
	}
	at = ms(at)
	if at.Before(mi.Cut.At) {
		// Records up to the cut are out already; the run ends there.
		at = mi.Cut.At
	}
	behind := at.After(mi.live.At)
	m.mu.Unlock()
	var s sample
	var err error
	if behind {
		s, err = m.sample(ctx, uid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if mi.Ended {
		return
	}
	switch {
	case at.After(mi.live.At):
		cpu, tx, mem := mi.live.CPU, mi.live.Tx, mi.mem
		if err == nil && behind {
			cpu, tx, mem = s.CPUUsageNanos, s.NetTxBytes, s.MemoryUsage
			if mem == 0 {
				mem = mi.mem
			}
		}
		mi.accrue(at, cpu, tx, mem)
	case at.Before(mi.live.At):
		mi.trim(at)
	}
	mi.Ended, mi.EndAt = true, at
	m.dirty = true
}

// trim drops what the points say about the time after at.
func (mi *meterInstance) trim(at time.Time) {
	kept := mi.points[:0]
	for _, p := range mi.points {
		if !p.start.Before(at) {
			continue
		}
		if p.end.After(at) {
			f := float64(at.Sub(p.start)) / float64(p.end.Sub(p.start))
			prevCPU, prevTx := p.cpuCum-p.cpu, p.txCum-p.tx
			p.cpu = uint64(float64(p.cpu) * f)
			p.tx = uint64(float64(p.tx) * f)
			p.cpuCum, p.txCum = prevCPU+p.cpu, prevTx+p.tx
			p.end = at
		}
		kept = append(kept, p)
	}
	mi.points = kept
	mi.live = mi.Cut
	if n := len(kept); n > 0 {
		mi.live = meterCut{At: kept[n-1].end, CPU: kept[n-1].cpuCum, Tx: kept[n-1].txCum}
	}
}

// cutLocked turns an instance's points up to horizon (all of them once it
// ended) into a record.
func (m *meter) cutLocked(mi *meterInstance, horizon time.Time) {
	if mi.FinalCut || len(m.pending) >= meterMaxPending {
		return
	}
	n := 0
	for _, p := range mi.points {
		if !mi.Ended && p.end.After(horizon) {
			break
		}
		n++
	}
	if n == 0 && !mi.Ended {
		return
	}
	rec := api.UsageRecord{Tenant: mi.Tenant, Instance: mi.Instance, UID: mi.UID, Host: m.host, Seq: mi.NextSeq,
		Start: mi.Cut.At, End: mi.Cut.At, CPUMilli: mi.CPUMilli, MemoryBytes: mi.MemoryBytes, Points: []api.UsagePoint{}}
	next := mi.Cut
	for _, p := range mi.points[:n] {
		rec.Points = append(rec.Points, api.UsagePoint{uint64(p.end.Sub(p.start).Milliseconds()), p.cpu, p.mem, p.tx})
		rec.End = p.end
		next = meterCut{At: p.end, CPU: p.cpuCum, Tx: p.txCum}
	}
	if mi.Ended {
		rec.Final = true
		mi.FinalCut = true
	}
	mi.points = append([]meterPoint(nil), mi.points[n:]...)
	mi.Cut = next
	mi.NextSeq++
	m.pending = append(m.pending, rec)
	m.dirty = true
}

// persist writes the meter file if anything changed: a snapshot taken
// under mu, written outside it, in the order the snapshots were taken.
func (m *meter) persist() error {
	m.persisting.Lock()
	defer m.persisting.Unlock()
	m.mu.Lock()
	if !m.dirty {
		m.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(meterFile{Instances: m.insts, Pending: m.pending})
	n := len(m.pending)
	m.dirty = false
	m.mu.Unlock()
	if err == nil {
		err = os.MkdirAll(filepath.Dir(m.path), 0o700)
	}
	if err == nil {
		err = atomicfile.Write(m.path, b, 0o600)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.dirty = true
		return err
	}
	// Records sent meanwhile left the front of pending; none of those
	// written can have been sent before this (only durable ones are).
	m.durable = max(m.durable, min(n, len(m.pending)))
	return nil
}

// flush cuts records up to horizon (uids: only those instances; nil:
// all), makes them durable and sends what is pending.
func (m *meter) flush(ctx context.Context, horizon time.Time, uids ...string) error {
	m.mu.Lock()
	if uids == nil {
		for _, mi := range m.insts {
			m.cutLocked(mi, horizon)
		}
	} else {
		for _, uid := range uids {
			if mi := m.insts[uid]; mi != nil {
				m.cutLocked(mi, horizon)
			}
		}
	}
	m.mu.Unlock()
	if err := m.persist(); err != nil {
		// Nothing unwritten is sent: a record must be fixed first.
		return fmt.Errorf("writing the meter file %s: %w", m.path, err)
	}
	return m.send(ctx)
}

// send sends the pending records in order and forgets those the sink
// took (or refused for good), and the instances whose final record went.
func (m *meter) send(ctx context.Context) error {
	select {
	case m.sending <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.sending }()
	for {
		m.mu.Lock()
		batch := m.pending[:min(m.durable, meterSendBatch)]
		batch = append([]api.UsageRecord(nil), batch...)
		m.mu.Unlock()
		if len(batch) == 0 || m.sink == nil {
			return nil
		}
		refused, err := m.sink.PutUsage(ctx, m.host, batch)
		if err != nil {
			return err
		}
		for _, r := range refused {
			if r.Index >= 0 && r.Index < len(batch) {
				rec := batch[r.Index]
				m.log.Warn("usage record refused; dropped", "instance", rec.Instance, "uid", rec.UID, "seq", rec.Seq, "reason", r.Reason)
			}
		}
		m.mu.Lock()
		m.pending = m.pending[len(batch):]
		m.durable -= len(batch)
		for _, rec := range batch {
			if mi := m.insts[rec.UID]; rec.Final && mi != nil && mi.FinalCut {
				delete(m.insts, rec.UID)
			}
		}
		m.dirty = true
		m.mu.Unlock()
	}
}

// finish ends an instance's run at at (unless it ended already) and sends
// its final record, waiting a little: the instance's record is about to
// go, and a host may report only instances placed on it.
func (m *meter) finish(ctx context.Context, uid string, at time.Time) {
	m.end(ctx, uid, at)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), meterFinalWait)
	defer cancel()
	if err := m.flush(sctx, m.now(), uid); err != nil {
		m.log.Warn("sending the final usage record failed; it is sent later", "uid", uid, "err", err)
	}
}

// forget ends the meters of instances that are no longer this host's
// (deleted while the agent was down): their run ends at the last cut,
// the last time known to be metered.
func (m *meter) forget(ctx context.Context, known map[string]bool) {
	m.mu.Lock()
	var gone []string
	for uid, mi := range m.insts {
		if !known[uid] && !mi.Ended {
			gone = append(gone, uid)
		}
	}
	m.mu.Unlock()
	sort.Strings(gone)
	for _, uid := range gone {
		m.mu.Lock()
		mi := m.insts[uid]
		at := mi.Cut.At
		m.mu.Unlock()
		m.log.Info("metering of an instance no longer on this host ends at its last record", "uid", uid, "at", at)
		m.end(ctx, uid, at)
	}
}

// run cuts and sends records every meterFlushInterval until ctx ends,
// then writes the meter file a last time (what was not cut is accrued
// again by the next run, from the cut).
func (m *meter) run(ctx context.Context) {
	t := time.NewTicker(meterFlushInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			if err := m.persist(); err != nil {
				m.log.Warn("writing the meter file failed", "err", err)
			}
			return
		case <-t.C:
		}
		fctx, cancel := context.WithTimeout(ctx, 3*meterFlushInterval)
		err := m.flush(fctx, m.now().Add(-meterHoldback))
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			m.log.Warn("sending usage records failed; they are kept and sent again", "err", err)
			failing = true
		case err == nil && failing:
			m.log.Info("usage records sent again")
			failing = false
		}
	}
}
