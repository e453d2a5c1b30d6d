package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
)

// humanDuration renders d as docker does ("5 seconds", "About an hour").
func humanDuration(d time.Duration) string {
	if s := int(d.Seconds()); s < 1 {
		return "Less than a second"
	} else if s == 1 {
		return "1 second"
	} else if s < 60 {
		return fmt.Sprintf("%d seconds", s)
	}
	if m := int(d.Minutes()); m == 1 {
		return "About a minute"
	} else if m < 60 {
		return fmt.Sprintf("%d minutes", m)
	}
	if h := int(math.Round(d.Hours())); h == 1 {
		return "About an hour"
	} else if h < 48 {
		return fmt.Sprintf("%d hours", h)
	} else if h < 24*7*2 {
		return fmt.Sprintf("%d days", h/24)
	} else if h < 24*30*2 {
		return fmt.Sprintf("%d weeks", h/24/7)
	} else if h < 24*365*2 {
		return fmt.Sprintf("%d months", h/24/30)
	}
	return fmt.Sprintf("%d years", int(d.Hours())/24/365)
}

// ago renders t relative to now; the zero time renders as "".
func ago(now time.Time, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return humanDuration(now.Sub(t)) + " ago"
}

// humanSize renders a byte count with decimal units and three significant
// digits, as docker does ("4.26MB").
func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.3g%s", f, units[i])
}

// shortDigest drops the algorithm and keeps 12 hex digits.
func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok {
		d = hex
	}
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func formatPort(p api.PortMapping) string {
	ip := p.HostIP
	if ip == "" {
		ip = "0.0.0.0"
	} else if strings.Contains(ip, ":") {
		ip = "[" + ip + "]"
	}
	proto := p.Protocol
	if proto == "" {
		proto = "tcp"
	}
	return fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, proto)
}

func formatPorts(ps []api.PortMapping) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = formatPort(p)
	}
	return strings.Join(out, ", ")
}

// imageSummary is the first container's image, with the count of the others.
func imageSummary(spec api.InstanceSpec) string {
	switch n := len(spec.Containers); n {
	case 0:
		return ""
	case 1:
		return spec.Containers[0].Image
	default:
		return fmt.Sprintf("%s (+%d)", spec.Containers[0].Image, n-1)
	}
}

func restarts(st api.InstanceStatus) int {
	n := 0
	for _, c := range st.Containers {
		n += c.RestartCount
	}
	for _, c := range st.InitContainers {
		n += c.RestartCount
	}
	return n
}

// exitCode returns the exit code that stands for the instance: the first
// non-zero one of its containers, else 0; ok is false when no container
// reported one.
func exitCode(st api.InstanceStatus) (code int, ok bool) {
	for _, c := range st.Containers {
		if c.ExitCode == nil {
			continue
		}
		ok = true
		if *c.ExitCode != 0 {
			return *c.ExitCode, true
		}
	}
	return 0, ok
}

// finishedAt is when the instance ended: its own FinishedAt, else its
// containers' latest.
func finishedAt(st api.InstanceStatus) time.Time {
	if st.FinishedAt != nil {
		return *st.FinishedAt
	}
	var t time.Time
	for _, c := range st.Containers {
		if c.FinishedAt != nil && c.FinishedAt.After(t) {
			t = *c.FinishedAt
		}
	}
	return t
}

// statusText is the STATUS column of ps.
// restarting returns an app container of a running instance that ended
// and that the restart policy restarts: one in its restart backoff.
func restarting(inst api.Instance) *api.ContainerStatus {
	for i, c := range inst.Status.Containers {
		if c.State == api.ContainerTerminated && c.ExitCode != nil && c.FinishedAt != nil &&
			model.WillRestart(inst.Spec.RestartPolicy, *c.ExitCode) {
			return &inst.Status.Containers[i]
		}
	}
	return nil
}

func statusText(inst api.Instance, now time.Time) string {
	st := inst.Status
	var s string
	switch {
	case inst.DeletionRequested && !st.Phase.Terminal():
		s = "Removing"
	case st.Phase == api.PhaseRunning && inst.StopRequested:
		s = "Stopping"
	case st.Phase == api.PhaseRunning && restarting(inst) != nil:
		// A container waits out its restart backoff: docker's wording.
		c := restarting(inst)
		s = fmt.Sprintf("Restarting (%d) %s", *c.ExitCode, ago(now, *c.FinishedAt))
	case st.Phase == api.PhaseRunning:
		s = "Up"
		if st.StartedAt != nil {
			s += " " + humanDuration(now.Sub(*st.StartedAt))
		}
		if h := healthText(inst); h != "" {
			s += " (" + h + ")"
		}
	case st.Phase.Terminal():
		if code, ok := exitCode(st); ok {
			s = fmt.Sprintf("Exited (%d)", code)
		} else {
			s = string(st.Phase)
			if st.Reason != "" {
				s += " (" + st.Reason + ")"
			}
		}
		if t := finishedAt(st); !t.IsZero() {
			s += " " + ago(now, t)
		}
	case st.Phase == "":
		s = "Unknown"
	case strings.HasPrefix(st.Reason, "Init:"):
		// Init containers at work: Init:1/2, Init:CrashLoopBackOff, as
		// kubectl shows a pod's.
		s = st.Reason
	default: // Pending, Creating
		s = string(st.Phase)
		if st.Reason != "" {
			s += " (" + st.Reason + ")"
		}
	}
	if n := restarts(st); n > 0 {
		s += fmt.Sprintf(", %d restarts", n)
	}
	return s
}

// failureText explains an instance that failed without an exit code.
func failureText(inst api.Instance) string {
	s := fmt.Sprintf("instance %s failed", inst.Name)
	if inst.Status.Reason != "" {
		s += ": " + inst.Status.Reason
	}
	if inst.Status.Message != "" {
		s += ": " + inst.Status.Message
	}
	return s
}

func writeJSONIndent(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
