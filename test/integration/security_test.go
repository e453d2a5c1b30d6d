package integration

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// usageOf returns the usage of one instance (by UID) as kanga usage
// reports it, once its final record arrived.
func usageOf(p *platform, uid string) api.UsageItem {
	p.t.Helper()
	var item api.UsageItem
	defer func() {
		if p.t.Failed() {
			p.t.Logf("last usage seen of %s: %+v", uid, item)
		}
	}()
	p.eventually("the final usage record of "+uid, 60*time.Second, func() bool {
		var rep api.UsageReport
		if err := json.Unmarshal([]byte(p.must("usage", "--by", "instance", "--since", "1h", "-o", "json")), &rep); err != nil {
			p.t.Fatal(err)
		}
		for _, it := range rep.Items {
			if it.UID == uid {
				item = it
				return it.Final
			}
		}
		return false
	})
	return item
}

// runTime is how long an instance's single container ran.
func runTime(t *testing.T, in api.Instance) float64 {
	t.Helper()
	c := in.Status.Containers[0]
	if c.StartedAt == nil || c.FinishedAt == nil {
		t.Fatalf("container status %+v has no start or finish", c)
	}
	return c.FinishedAt.Sub(*c.StartedAt).Seconds()
}

// checkRecords reads an instance's usage records from the store (as an
// external etcd client of the running platform) and checks that they
// follow each other without gap or overlap and end with one final record.
func checkRecords(t *testing.T, etcdSock, tenantName, uid string) int {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{Endpoints: []string{"unix://" + etcdSock}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.UsageRecords(t.Context(), tenantName, uid)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.Seq != int64(i) {
			t.Fatalf("record %d has sequence number %d: records are missing or doubled: %+v", i, r.Seq, recs)
		}
		if i > 0 && !r.Start.Equal(recs[i-1].End) {
			t.Fatalf("record %d starts at %s, record %d ended at %s: a gap or an overlap", i, r.Start, i-1, recs[i-1].End)
		}
		if r.Final != (i == len(recs)-1) {
			t.Fatalf("record %d of %d: final = %v", i, len(recs), r.Final)
		}
	}
	if len(recs) == 0 {
		t.Fatal("no usage records")
	}
	return len(recs)
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

// TestUsageAcrossUpCrash: an instance with 0.5 CPU promised runs 20 s;
// kanga up is killed with SIGKILL in the middle and started again. Its
// metered time still equals its run time within a second, its promised
// vCPU-seconds are 10 ± 0.5, and its records neither miss nor double a
// second. A CPU-bound instance beside it shows what it used.
func TestUsageAcrossUpCrash(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	p.must("run", "-d", "--name", "metered", "--cpu", "0.5", "--memory", "64Mi", "kanga.test/busybox", "sleep", "20")
	p.must("run", "-d", "--name", "hog", "--cpu", "0.5", "kanga.test/busybox", "sh", "-c", "while :; do :; done & sleep 12; kill $!")
	// After the host's first cut (every 10 s), before the run ends.
	time.Sleep(13 * time.Second)
	p.crash()
	time.Sleep(2 * time.Second)
	p.start()

	var in, hog api.Instance
	p.eventually("both instances to finish", 60*time.Second, func() bool {
		in, hog = p.inspect("metered"), p.inspect("hog")
		return in.Status.Phase.Terminal() && hog.Status.Phase.Terminal()
	})
	ran := runTime(t, in)
	u := usageOf(p, in.UID)
	t.Logf("ran %.3f s; metered %+v", ran, u)
	if !near(u.Seconds, ran, 1) || !near(u.VCPUSecondsPromised, 0.5*ran, 0.5) || !near(u.VCPUSecondsPromised, 10, 0.5) {
		t.Errorf("metered %.3f s and %.3f vCPU-s promised; the instance ran %.3f s at 0.5 CPU (want 10 ± 0.5)", u.Seconds, u.VCPUSecondsPromised, ran)
	}
	if want := 64.0 / 1024 * ran; !near(u.GiBSecondsPromised, want, 0.1) {
		t.Errorf("metered %.3f GiB-s promised, want %.3f", u.GiBSecondsPromised, want)
	}
	if u.VCPUSecondsUsed > 0.5 || u.GiBSecondsUsed <= 0 {
		t.Errorf("a sleeping instance used %.3f vCPU-s and %.5f GiB-s", u.VCPUSecondsUsed, u.GiBSecondsUsed)
	}
	if n := checkRecords(t, filepath.Join(p.dataDir, "etcd.sock"), "default", in.UID); n < 2 {
		t.Errorf("%d usage records: the crash was meant to fall between two", n)
	}

	hogRan := runTime(t, hog)
	h := usageOf(p, hog.UID)
	t.Logf("hog ran %.3f s; metered %+v", hogRan, h)
	// Throttled to its quota; on a loaded machine it may get less.
	if !near(h.Seconds, hogRan, 1) || h.VCPUSecondsUsed > 0.5*hogRan*1.15+0.2 || h.VCPUSecondsUsed < 0.1*hogRan {
		t.Errorf("hog: metered %.3f s, used %.3f vCPU-s; it ran %.3f s busy at 0.5 CPU", h.Seconds, h.VCPUSecondsUsed, hogRan)
	}
	checkRecords(t, filepath.Join(p.dataDir, "etcd.sock"), "default", hog.UID)

	// The per-tenant view adds them up; csv has a row per instance.
	csv := p.must("usage", "--by", "instance", "--since", "1h", "-o", "csv")
	if !strings.Contains(csv, in.UID) || !strings.Contains(csv, "vcpu_seconds_promised") {
		t.Errorf("usage -o csv:\n%s", csv)
	}
}

// crashServer kills kanga server with SIGKILL (its embedded etcd with it).
func (p *hostPool) crashServer() {
	p.srv.Kill()
}

// TestClusterUsageAndJoinTokens: the cluster form. An agent's usage
// records travel over the host link and survive a SIGKILL of the control
// plane; join tokens bind one host name, a join cannot take a name another
// agent holds, and revoking a host's token cuts it off.
func TestClusterUsageAndJoinTokens(t *testing.T) {
	p := startPool(t, map[string]string{"us-a": "a"})
	p.importEverywhere()
	p.must("run", "-d", "--name", "metered", "--cpu", "0.5", "kanga.test/busybox", "sleep", "15")
	time.Sleep(5 * time.Second)
	p.crashServer()
	time.Sleep(3 * time.Second)
	p.startServer()
	var in api.Instance
	p.eventually("metered to finish", 60*time.Second, func() bool {
		in = p.get("metered")
		return in.Status.Phase.Terminal()
	})
	if in.Status.Host != "us-a" {
		t.Fatalf("metered ran on %q", in.Status.Host)
	}
	ran := runTime(t, in)
	u := usageOf(p.platform, in.UID)
	t.Logf("ran %.3f s; metered %+v", ran, u)
	if !near(u.Seconds, ran, 1) || !near(u.VCPUSecondsPromised, 0.5*ran, 0.5) {
		t.Errorf("metered %.3f s, %.3f vCPU-s promised; ran %.3f s at 0.5 CPU", u.Seconds, u.VCPUSecondsPromised, ran)
	}
	checkRecords(t, filepath.Join(p.dataDir, "etcd.sock"), "default", in.UID)

	// An exec: one request ID in the audit record and the host's log.
	p.must("run", "-d", "--name", "shell", "kanga.test/busybox", "sleep", "1000")
	p.eventually("shell to run", 60*time.Second, func() bool { return p.get("shell").Status.Phase == api.PhaseRunning })
	p.must("exec", "-e", "PASSWORD=hunter2", "shell", "true")
	var list api.AuditList
	if err := json.Unmarshal([]byte(p.must("audit", "--since", "1h", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	execID := ""
	for _, r := range list.Items {
		if r.Verb == "instances.exec" && r.Object == "instances/shell" {
			execID = r.RequestID
		}
	}
	agentLog, _ := os.ReadFile(p.agents["us-a"].logPath)
	if execID == "" || !strings.Contains(string(agentLog), "request_id="+execID) {
		t.Errorf("exec's request ID %q is not in us-a's log", execID)
	}
	if strings.Contains(string(agentLog), "hunter2") || strings.Contains(p.must("audit", "--since", "1h", "-o", "json"), "hunter2") {
		t.Errorf("an exec's environment value reached a log")
	}
	p.must("rm", "-f", "shell")

	// A join token bound to us-new: the agent joins with it, as us-new
	// only.
	tok := strings.TrimSpace(p.must("host", "token", "create", "us-new", "--expires", "1h"))
	mhSeq++
	seq := (os.Getpid()*7+mhSeq)%250 + 1
	newAgent := func(name, host string) *hostAgent {
		return &hostAgent{name: host, dataDir: filepath.Join(filepath.Dir(p.dataDir), name), bridge: "kangamh" + strconv.Itoa(seq),
			subnet: "10.231." + strconv.Itoa(seq) + ".0/24", listen: "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
			logPath: filepath.Join(filepath.Dir(p.dataDir), name+".log")}
	}
	squat := newAgent("squat1", "us-a")
	out, err := p.agentCmd(squat, tok).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `bound to host "us-new"`) {
		t.Errorf("us-new's token joining as us-a: %v\n%s", err, harness.Tail(string(out), 1500))
	}
	squat2 := newAgent("squat2", "us-a")
	out, err = p.agentCmd(squat2, p.joinToken()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "taken") {
		t.Errorf("the shared token joining as the existing us-a: %v\n%s", err, harness.Tail(string(out), 1500))
	}
	a := newAgent("us-new", "us-new")
	p.agents["us-new"] = a
	p.startAgent(a, tok)
	p.waitReady("us-new")
	ls := p.must("host", "token", "ls")
	if !strings.Contains(ls, "us-new") {
		t.Fatalf("host token ls:\n%s", ls)
	}
	id := strings.Fields(strings.Split(strings.TrimSpace(ls), "\n")[1])[0]
	p.must("host", "token", "revoke", id)
	p.eventually("us-new to be cut off", 30*time.Second, func() bool {
		return p.hosts()["us-new"].Status.Phase == api.HostNotReady
	})
	// Restarted, with its certificate, it stays out.
	p.stopAgent(a)
	p.startAgent(a, "")
	time.Sleep(3 * time.Second)
	if ph := p.hosts()["us-new"].Status.Phase; ph != api.HostNotReady {
		t.Errorf("revoked us-new came back %s", ph)
	}
	b, _ := os.ReadFile(a.logPath)
	if !strings.Contains(string(b), "revoked") {
		t.Errorf("the revoked agent's log does not say why:\n%s", harness.Tail(string(b), 2000))
	}
	p.stopAgent(a)

	// The audit log has all of it, and verifies.
	audit := p.must("audit", "--since", "1h", "--verify")
	for _, verb := range []string{"instances.create", "join-tokens.create", "join-tokens.delete"} {
		if !strings.Contains(audit, verb) {
			t.Errorf("audit log lacks %s:\n%s", verb, audit)
		}
	}
}
