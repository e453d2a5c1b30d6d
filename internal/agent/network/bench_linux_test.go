package network

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The benchmark's own bridge and subnet, distinct from the tests' (kangat0,
// 10.213.0.0/24) and the integration tests' (kangaitN, 10.214.N.0/24), so
// it can run while they do.
const (
	benchBridge  = "kangans0"
	benchSubnet  = "10.244.0.0/24"
	benchNetName = "kanga-bench"
)

// BenchmarkAttach measures one instance's network lifecycle, ADD (Setup)
// and DEL (Teardown), with 0, 20 and 100 other attachments already on the
// bridge, for a plain attachment (what the warm pool makes: bridge and
// host-local only), one with bandwidth limits (as an instance type sets)
// and one that publishes a port.
//
// Besides the wall time of the pair (ns/op) it reports medians per
// operation: wall milliseconds, CPU milliseconds of the plugin processes
// and everything they ran (RUSAGE_CHILDREN: user+sys of reaped children,
// which includes the plugins' own iptables children), CPU milliseconds of
// this process, and how many times iptables was executed, counted by a
// wrapper put first on PATH (plugins inherit the environment).
//
//	sudo go test -run '^$' -bench BenchmarkAttach -benchtime 20x ./internal/agent/network/
func BenchmarkAttach(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates network namespaces, a bridge and iptables rules")
	}
	counter := installIptablesCounter(b)
	for _, kind := range []string{"plain", "limits", "port"} {
		for _, existing := range []int{0, 20, 100} {
			b.Run(fmt.Sprintf("kind=%s/existing=%d", kind, existing), func(b *testing.B) {
				benchAttach(b, counter, kind, existing)
			})
		}
	}
}

func benchAttach(b *testing.B, counter string, kind string, existing int) {
	ctx := context.Background()
	dir := b.TempDir()
	m, err := New(Config{
		StateDir:    filepath.Join(dir, "state"),
		NetNSDir:    filepath.Join(dir, "netns"),
		Bridge:      benchBridge,
		Subnet:      benchSubnet,
		NetworkName: benchNetName,
	})
	if err != nil {
		b.Fatal(err)
	}
	var others []string
	b.Cleanup(func() {
		for _, id := range others {
			if err := m.Teardown(ctx, id, nil); err != nil {
				b.Errorf("teardown %s: %v", id, err)
			}
		}
		if err := m.Close(ctx); err != nil {
			b.Errorf("close: %v", err)
		}
		_ = exec.Command("ip", "link", "del", benchBridge).Run()
	})
	for i := range existing {
		id := fmt.Sprintf("kb-%d-x%d", os.Getpid(), i)
		if _, err := m.Setup(ctx, id, nil, Limits{}); err != nil {
			b.Fatal(err)
		}
		others = append(others, id)
	}

	var (
		ports  []Port
		limits Limits
	)
	switch kind {
	case "port":
		ports = []Port{{HostIP: "127.0.0.1", HostPort: benchFreePort(b), ContainerPort: 80}}
	case "limits": // as instance type k1.small
		limits = Limits{IngressBPS: 10_000_000, EgressBPS: 10_000_000}
	}
	var add, del opSamples
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("kb-%d-%d", os.Getpid(), i)
		s := startSample(counter)
		if _, err := m.Setup(ctx, id, ports, limits); err != nil {
			b.Fatal(err)
		}
		add.add(s.end(counter))
		s = startSample(counter)
		if err := m.Teardown(ctx, id, nil); err != nil {
			b.Fatal(err)
		}
		del.add(s.end(counter))
	}
	b.StopTimer()
	add.report(b, "add")
	del.report(b, "del")
}

// installIptablesCounter puts an iptables wrapper first on PATH that
// appends a line to a file for each run and then runs the real one.
// It returns the file.
func installIptablesCounter(b *testing.B) string {
	real, err := exec.LookPath("iptables")
	if err != nil {
		b.Skip("iptables not installed")
	}
	dir := b.TempDir()
	counter := filepath.Join(dir, "count")
	script := fmt.Sprintf("#!/bin/sh\necho >>%s\nexec %s \"$@\"\n", counter, real)
	if err := os.WriteFile(filepath.Join(dir, "iptables"), []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	b.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return counter
}

func countLines(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "\n")
}

// sample is a point in time (from startSample) or the cost of one
// operation (from end).
type sample struct {
	at       time.Time
	wall     time.Duration
	children time.Duration
	self     time.Duration
	execs    int
}

func cpuTime(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startSample(counter string) sample {
	return sample{
		at:       time.Now(),
		children: cpuTime(unix.RUSAGE_CHILDREN),
		self:     cpuTime(unix.RUSAGE_SELF),
		execs:    countLines(counter),
	}
}

func (s sample) end(counter string) sample {
	return sample{
		wall:     time.Since(s.at),
		children: cpuTime(unix.RUSAGE_CHILDREN) - s.children,
		self:     cpuTime(unix.RUSAGE_SELF) - s.self,
		execs:    countLines(counter) - s.execs,
	}
}

type opSamples struct {
	wall, children, self []float64
	execs                []float64
}

func (o *opSamples) add(s sample) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	o.wall = append(o.wall, ms(s.wall))
	o.children = append(o.children, ms(s.children))
	o.self = append(o.self, ms(s.self))
	o.execs = append(o.execs, float64(s.execs))
}

func (o *opSamples) report(b *testing.B, op string) {
	b.ReportMetric(median(o.wall), op+"-wall-ms")
	b.ReportMetric(median(o.children), op+"-plugin-cpu-ms")
	b.ReportMetric(median(o.self), op+"-self-cpu-ms")
	b.ReportMetric(median(o.execs), op+"-iptables")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func benchFreePort(b *testing.B) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		b.Fatal(err)
	}
	return sa.(*unix.SockaddrInet4).Port
}
