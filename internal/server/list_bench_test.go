package server

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkConcurrentList measures GET /v1/instances of one tenant with
// 100 instances on the real (embedded) store: one request at a time, and
// rounds of 200 requests sent at once. Each b.N iteration of the
// concurrent case is one round. The figures that matter are the reported
// p50-ms and p99-ms of a request, not ns/op.
func BenchmarkConcurrentList(b *testing.B) {
	st := testStore(b)
	srv := New(st, Options{Hosts: fakeDirectory{newFakeHost()}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ScheduleWait: -1})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	tn := "list-bench-" + randomHexB(b)[:6]
	token := "tok-" + tn + "-" + randomHexB(b)
	if err := st.PutToken(b.Context(), token, tn); err != nil {
		b.Fatal(err)
	}
	const instances, concurrency = 100, 200
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: concurrency, MaxIdleConnsPerHost: concurrency}}
	defer hc.CloseIdleConnections()
	do := func(method, path, body string) (int, int, error) {
		req, err := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, int(n), err
	}
	for i := range instances {
		body := fmt.Sprintf(`{"name":"web-%03d","labels":{"app":"web","tier":"frontend"},"spec":{"restartPolicy":"Always","containers":[{"name":"main","image":%q,"command":["/bin/sh","-c","while true; do sleep 1; done"],"env":[{"name":"MODE","value":"production"},{"name":"INDEX","value":"%d"}]}]}}`, i, imgBusybox, i)
		if code, _, err := do("POST", "/v1/instances", body); err != nil || code != http.StatusCreated {
			b.Fatalf("create %d: status %d, %v", i, code, err)
		}
	}
	code, size, err := do("GET", "/v1/instances", "")
	if err != nil || code != http.StatusOK {
		b.Fatalf("list: status %d, %v", code, err)
	}
	b.Logf("list of %d instances: %d bytes", instances, size)

	list := func() time.Duration {
		start := time.Now()
		code, _, err := do("GET", "/v1/instances", "")
		if err != nil || code != http.StatusOK {
			b.Errorf("list: status %d, %v", code, err)
		}
		return time.Since(start)
	}
	// cpu-ms is the process's CPU time (server, etcd and the client
	// alike) per request: unlike the latencies, it does not depend on what
	// else the machine runs.
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	report := func(b *testing.B, lat []time.Duration, cpuUsed time.Duration) {
		b.ReportMetric(float64(cpuUsed)/float64(len(lat))/float64(time.Millisecond), "cpu-ms/req")
		slices.Sort(lat)
		q := func(p float64) float64 {
			return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond)
		}
		b.ReportMetric(q(0.50), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
		b.ReportMetric(q(1), "max-ms")
	}

	b.Run("one", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		used := cpu()
		for b.Loop() {
			lat = append(lat, list())
		}
		report(b, lat, cpu()-used)
	})
	b.Run(fmt.Sprintf("concurrent=%d", concurrency), func(b *testing.B) {
		var mu sync.Mutex
		lat := make([]time.Duration, 0, b.N*concurrency)
		used := cpu()
		for b.Loop() {
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range concurrency {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					d := list()
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}()
			}
			close(start)
			wg.Wait()
		}
		report(b, lat, cpu()-used)
	})
}
