package probe

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

// fakeClock fires every wait at once and records how long each was.
type fakeClock struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Time{}
	return ch
}

// fakeChecker answers from a script ('+' healthy, '-' not); past its end
// it blocks until the check's context ends, so a test sees every
// transition the script makes and nothing after.
type fakeChecker struct {
	mu     sync.Mutex
	script string
	calls  int
}

func (c *fakeChecker) Check(ctx context.Context) error {
	c.mu.Lock()
	i := c.calls
	c.calls++
	c.mu.Unlock()
	if i >= len(c.script) {
		<-ctx.Done()
		return ctx.Err()
	}
	if c.script[i] == '+' {
		return nil
	}
	return errors.New("fake failure")
}

func probeSpec(success, failure int) *api.Probe {
	return &api.Probe{PeriodSeconds: 1, TimeoutSeconds: 3600, SuccessThreshold: success, FailureThreshold: failure}
}

// run starts cfg and collects n results, then stops.
func run(t *testing.T, cfg Config, n int) []Result {
	t.Helper()
	results := make(chan Result, 16)
	cfg.Report = func(ctx context.Context, r Result) {
		select {
		case results <- r:
		case <-ctx.Done():
		}
	}
	stop := Start(context.Background(), cfg)
	var got []Result
	for len(got) < n {
		got = append(got, <-results)
	}
	stop()
	close(results)
	for r := range results {
		got = append(got, r)
	}
	return got
}

func summary(rs []Result) string {
	var s []string
	for _, r := range rs {
		st := "fail"
		if r.Healthy {
			st = "ok"
		}
		s = append(s, r.Kind.String()+":"+st)
	}
	return strings.Join(s, " ")
}

func TestProbeTransitions(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func() Config
		n    int
		want string
	}{
		{"liveness fails after failureThreshold in a row", func() Config {
			return Config{Liveness: &Target{Probe: probeSpec(1, 3), Checker: &fakeChecker{script: "+--+---"}}}
		}, 1, "Liveness:fail"},
		{"liveness ends at its failure", func() Config {
			return Config{Liveness: &Target{Probe: probeSpec(1, 1), Checker: &fakeChecker{script: "-++"}}}
		}, 1, "Liveness:fail"},
		{"readiness needs successThreshold in a row", func() Config {
			return Config{Readiness: &Target{Probe: probeSpec(2, 2), Checker: &fakeChecker{script: "+-++--+"}}}
		}, 2, "Readiness:ok Readiness:fail"},
		{"readiness that never passes says so once", func() Config {
			return Config{Readiness: &Target{Probe: probeSpec(1, 2), Checker: &fakeChecker{script: "------"}}}
		}, 1, "Readiness:fail"},
		{"adopted ready container stays ready", func() Config {
			return Config{Ready: true, Readiness: &Target{Probe: probeSpec(1, 1), Checker: &fakeChecker{script: "++-"}}}
		}, 1, "Readiness:fail"},
		{"startup gates liveness and readiness", func() Config {
			return Config{
				Startup:   &Target{Probe: probeSpec(1, 5), Checker: &fakeChecker{script: "--+"}},
				Readiness: &Target{Probe: probeSpec(1, 1), Checker: &fakeChecker{script: "+"}},
			}
		}, 2, "Startup:ok Readiness:ok"},
		{"startup fails after failureThreshold", func() Config {
			return Config{
				Startup:  &Target{Probe: probeSpec(1, 2), Checker: &fakeChecker{script: "--"}},
				Liveness: &Target{Probe: probeSpec(1, 1), Checker: &fakeChecker{script: "-"}},
			}
		}, 1, "Startup:fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg()
			cfg.Clock = &fakeClock{}
			if got := summary(run(t, cfg, tc.n)); got != tc.want {
				t.Errorf("transitions = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStartupHoldsLivenessBack(t *testing.T) {
	live := &fakeChecker{script: "-"}
	cfg := Config{
		Clock:    &fakeClock{},
		Startup:  &Target{Probe: probeSpec(1, 3), Checker: &fakeChecker{script: "---"}},
		Liveness: &Target{Probe: probeSpec(1, 1), Checker: live},
	}
	if got := summary(run(t, cfg, 1)); got != "Startup:fail" {
		t.Fatalf("transitions = %q, want Startup:fail", got)
	}
	if live.calls != 0 {
		t.Errorf("liveness was checked %d times before the startup probe passed", live.calls)
	}
}

func TestProbeTiming(t *testing.T) {
	clock := &fakeClock{}
	p := &api.Probe{InitialDelaySeconds: 7, PeriodSeconds: 4, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 2}
	cfg := Config{Clock: clock, Liveness: &Target{Probe: p, Checker: &fakeChecker{script: "--"}}}
	run(t, cfg, 1)
	want := []time.Duration{7 * time.Second, 4 * time.Second}
	if len(clock.waits) != len(want) || clock.waits[0] != want[0] || clock.waits[1] != want[1] {
		t.Errorf("waits = %v, want the initial delay then one period: %v", clock.waits, want)
	}
}

func TestTimeoutIsAFailure(t *testing.T) {
	p := &api.Probe{PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	// The script is empty: the check blocks until its timeout.
	got := run(t, Config{Clock: &fakeClock{}, Liveness: &Target{Probe: p, Checker: &fakeChecker{}}}, 1)
	if len(got) != 1 || got[0].Healthy || !strings.Contains(got[0].Message, "deadline") {
		t.Errorf("results = %+v, want one liveness failure for the deadline", got)
	}
}

// loopbackDialer stands in for NetnsDialer: it keeps the port and
// replaces the host, as NetnsDialer does, with the test server's.
func loopbackDialer(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

func TestHTTPChecker(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			if r.Host != "example.test" || r.Header.Get("X-Probe") != "1" {
				http.Error(w, "missing headers", http.StatusBadRequest)
			}
		case "/redirect-away":
			http.Redirect(w, r, "http://192.0.2.1/", http.StatusFound)
		case "/redirect-here":
			http.Redirect(w, r, "/bad", http.StatusFound)
		default:
			http.Error(w, "no such page", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var portN int
	for _, ch := range port {
		portN = portN*10 + int(ch-'0')
	}
	headers := []api.HTTPHeader{{Name: "Host", Value: "example.test"}, {Name: "X-Probe", Value: "1"}}
	for _, tc := range []struct {
		path    string
		healthy bool
	}{
		{"/ok", true},
		{"/bad", false},
		// Another host's redirect is not followed, and counts as healthy
		// (the kubelet's rule); one to the same port is followed.
		{"/redirect-away", true},
		{"/redirect-here", false},
	} {
		c := &HTTPChecker{Dial: loopbackDialer, Action: &api.HTTPGetAction{Path: tc.path, Port: portN, Scheme: "HTTP", HTTPHeaders: headers}}
		err := c.Check(context.Background())
		if (err == nil) != tc.healthy {
			t.Errorf("GET %s: err = %v, want healthy %v", tc.path, err, tc.healthy)
		}
	}
}
