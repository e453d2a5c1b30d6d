package agent

import (
	"time"
)

// startProfile times the steps of an instance start, for the one log line
// ("instance started") that says where its time went. The benchmark
// (`kanga bench start`) only sees the instance's events; this splits the
// agent's share of them step by step.
type startProfile struct {
	record time.Time // the instance record's creation, if known
	begin  time.Time
	last   time.Time
	names  []string
	took   []time.Duration
}

func newStartProfile(record time.Time) *startProfile {
	now := time.Now()
	return &startProfile{record: record, begin: now, last: now}
}

// step ends the step called name at now.
func (p *startProfile) step(name string) {
	now := time.Now()
	p.names = append(p.names, name)
	p.took = append(p.took, now.Sub(p.last))
	p.last = now
}

// attrs are the steps as slog attributes, in milliseconds.
func (p *startProfile) attrs() []any {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	out := make([]any, 0, 2*len(p.names)+4)
	if !p.record.IsZero() {
		out = append(out, "record-to-agent-ms", ms(p.begin.Sub(p.record)))
	}
	for i, n := range p.names {
		out = append(out, n+"-ms", ms(p.took[i]))
	}
	out = append(out, "agent-total-ms", ms(p.last.Sub(p.begin)))
	return out
}
