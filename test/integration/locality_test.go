package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/harness"
)

// hostImagesJSON reads `kanga host ls -o json` and returns each host's
// reported images.
func (p *hostPool) hostImagesJSON() map[string][]api.HostImage {
	p.t.Helper()
	out := p.must("host", "ls", "-o", "json")
	var list api.HostList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		p.t.Fatalf("host ls -o json: %v\n%s", err, out)
	}
	m := map[string][]api.HostImage{}
	for _, h := range list.Items {
		m[h.Name] = h.Images
	}
	return m
}

func findHostImage(imgs []api.HostImage, name string) (api.HostImage, bool) {
	for _, img := range imgs {
		if img.Name == name {
			return img, true
		}
	}
	return api.HostImage{}, false
}

// TestImageLocality: two real agents, the image imported on one only. The
// host holding it reports it (kanga host ls -o json), and an instance with
// no selector lands there. The holder is lc-b, which the scheduler's
// tie-break (the smallest name among equal hosts, here two identical
// empty hosts of this machine) would not pick: without locality the
// instance goes to lc-a, which lacks the image, and the test fails.
func TestImageLocality(t *testing.T) {
	// The server passes its --insecure-registry to the agents.
	registry := testenv.StartRegistry(t)
	p := startPoolWith(t, map[string]string{}, []string{"--insecure-registry", registry}, nil) // the agents join below
	dir := filepath.Dir(p.dataDir)
	newAgent := func(name string) *hostAgent {
		mhSeq++
		seq := (os.Getpid()*7+mhSeq)%250 + 1
		a := &hostAgent{name: name, dataDir: filepath.Join(dir, name), bridge: fmt.Sprintf("kangalc%d", seq),
			subnet: fmt.Sprintf("10.243.%d.0/24", seq), listen: "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)),
			logPath: filepath.Join(dir, name+".log"), labels: []string{"zone=a"}}
		p.agents[name] = a
		p.startAgent(a, p.joinToken())
		return a
	}
	const ref = "kanga.test/busybox:latest"

	// lc-b joins alone and gets the image (the server imports on every
	// host it is connected to: only lc-b).
	b := newAgent("lc-b")
	p.waitReady("lc-b")
	p.eventually("the import to reach lc-b", 60*time.Second, func() bool {
		if r := p.kanga("image", "import", p.imagePath("busybox.tar")); r.code != 0 {
			t.Logf("import: %s", r.stderr)
			return false
		}
		return strings.Contains(b.ctrOut("images", "ls", "-q"), ref)
	})
	// And a pullable image, also on lc-b only, for the prewarm below.
	pullable := testenv.PushImage(t, registry, p.imagePath("busybox.tar"), "lc/busybox:v1")
	p.must("image", "pull", pullable)
	if !strings.Contains(b.ctrOut("images", "ls", "-q"), pullable) {
		t.Fatalf("lc-b lacks %s after the pull", pullable)
	}
	a := newAgent("lc-a")
	p.waitReady("lc-a", "lc-b")
	if strings.Contains(a.ctrOut("images", "ls", "-q"), ref) {
		t.Fatalf("lc-a has %s although it joined after the import", ref)
	}

	// The report reaches the host record.
	p.eventually("lc-b to report "+ref, 30*time.Second, func() bool {
		_, ok := findHostImage(p.hostImagesJSON()["lc-b"], ref)
		return ok
	})
	imgs := p.hostImagesJSON()
	got, _ := findHostImage(imgs["lc-b"], ref)
	if got.Tenant == "" || !strings.HasPrefix(got.Digest, "sha256:") || got.Hot {
		t.Fatalf("lc-b reports %+v, want a tenant, a digest and not hot (nothing started yet)", got)
	}
	if img, ok := findHostImage(imgs["lc-a"], ref); ok {
		t.Fatalf("lc-a reports %+v, which it does not hold", img)
	}

	// No selector: locality decides.
	p.must("run", "-d", "--name", "near", "kanga.test/busybox", "sleep", "1000")
	p.eventually("near to run", 60*time.Second, func() bool {
		in := p.inspect("near")
		if in.Status.Phase == api.PhaseFailed {
			t.Fatalf("near failed on %s: %s %s", in.Status.Host, in.Status.Reason, in.Status.Message)
		}
		return in.Status.Phase == api.PhaseRunning
	})
	if h := p.inspect("near").Status.Host; h != "lc-b" {
		t.Fatalf("near runs on %s, want lc-b, the host holding %s", h, ref)
	}

	// The start made the image hot on lc-b, and the report says so.
	p.eventually("lc-b to report "+ref+" hot", 30*time.Second, func() bool {
		img, ok := findHostImage(p.hostImagesJSON()["lc-b"], ref)
		return ok && img.Hot && img.Starts >= 1 && img.LastUsedAt != nil
	})
	if out := p.must("host", "ls"); !strings.Contains(out, "(1 hot)") {
		t.Fatalf("kanga host ls does not show lc-b's hot image:\n%s", out)
	}

	// Prewarm on one host picks the one already holding the image (where
	// locality sends the burst), not lc-a, first in name order, which
	// could pull it.
	p.eventually("lc-b to report "+pullable, 30*time.Second, func() bool {
		_, ok := findHostImage(p.hostImagesJSON()["lc-b"], pullable)
		return ok
	})
	res, err := p.sdk().PrewarmImage(t.Context(), pullable, 1)
	if err != nil {
		t.Fatalf("prewarm %s --hosts 1: %v", pullable, err)
	}
	if len(res.Hosts) != 1 || res.Hosts[0].Host != "lc-b" || res.Hosts[0].Pulled {
		t.Fatalf("prewarm %s --hosts 1 warmed %+v, want lc-b without a pull", pullable, res.Hosts)
	}
	if strings.Contains(a.ctrOut("images", "ls", "-q"), pullable) {
		t.Fatalf("lc-a pulled %s although the prewarm chose lc-b", pullable)
	}
}

// TestImageLocalityUp: the host inside kanga up reports its images too:
// an import shows in kanga host ls -o json, and a start marks it hot.
func TestImageLocalityUp(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinaries(t, "containerd", "runc")
	p := startPlatformOn(t, harness.Net{DirPrefix: "kanga-lc-", BridgePrefix: "kangalc", SubnetPrefix: "10.243"}, "--pool-max", "0")
	const ref = "kanga.test/busybox:latest"
	images := func() []api.HostImage {
		out := p.must("host", "ls", "-o", "json")
		var list api.HostList
		if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 1 {
			t.Fatalf("host ls -o json: %v\n%s", err, out)
		}
		return list.Items[0].Images
	}
	p.must("image", "import", p.imagePath("busybox.tar"))
	p.eventually("kanga up's host to report "+ref, 30*time.Second, func() bool {
		_, ok := findHostImage(images(), ref)
		return ok
	})
	if img, _ := findHostImage(images(), ref); img.Tenant != "default" || img.Hot {
		t.Fatalf("reported %+v, want tenant default, not hot", img)
	}
	p.must("run", "-d", "--name", "hot", "kanga.test/busybox", "sleep", "1000")
	p.eventually("hot to run", 60*time.Second, func() bool { return p.inspect("hot").Status.Phase == api.PhaseRunning })
	p.eventually(ref+" reported hot", 30*time.Second, func() bool {
		img, ok := findHostImage(images(), ref)
		return ok && img.Hot && img.Starts >= 1
	})
}
