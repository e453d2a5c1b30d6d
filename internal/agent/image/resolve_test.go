package image

import (
	"testing"
	"time"
)

// TestHotOrderAndTenants: Hot lists the most recently started image
// first, a tenant sees only its own starts, and the host view sums them.
func TestHotOrderAndTenants(t *testing.T) {
	s := &Service{}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.usage.record("a", "img/one:1", t0)
	s.usage.record("a", "img/two:1", t0.Add(time.Second))
	s.usage.record("b", "img/one:1", t0.Add(2*time.Second))
	s.usage.record("a", "img/one:1", t0.Add(-time.Second)) // out of order: last stays t0

	a := s.Hot("a")
	if len(a) != 2 || a[0].Name != "img/two:1" || a[1].Name != "img/one:1" || a[1].Starts != 2 || !a[1].LastUsed.Equal(t0) {
		t.Errorf("tenant a: %+v", a)
	}
	b := s.Hot("b")
	if len(b) != 1 || b[0].Name != "img/one:1" || b[0].Starts != 1 {
		t.Errorf("tenant b: %+v", b)
	}
	host := s.Hot("")
	if len(host) != 2 || host[0].Name != "img/one:1" || host[0].Starts != 3 || !host[0].LastUsed.Equal(t0.Add(2*time.Second)) {
		t.Errorf("host: %+v", host)
	}
	s.usage.forget("a", "img/one:1")
	if a := s.Hot("a"); len(a) != 1 || a[0].Name != "img/two:1" {
		t.Errorf("after forget: %+v", a)
	}
}
