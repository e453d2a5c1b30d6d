package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/cio"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The copiers see the end of the output exactly when the shim closes its
// ends, not before it opened them; Close removes the FIFOs.
func TestLogIO(t *testing.T) {
	a := &Agent{cfg: Config{DataDir: t.TempDir()}}
	var out syncBuffer
	l, err := a.newLogIO("u1", "app", &out, "")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing opened by the shim yet: the copiers must not have ended.
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("the copiers ended before the shim opened the FIFOs")
	case <-time.After(50 * time.Millisecond):
	}
	// The shim's ends, opened while the task is created.
	shimOut, err := os.OpenFile(l.cfg.Stdout, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	shimErr, err := os.OpenFile(l.cfg.Stderr, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.created()
	shimOut.WriteString("out\n")
	shimErr.WriteString("err\n")
	shimOut.Close()
	shimErr.Close()
	l.Wait()
	if got := out.String(); len(got) != 8 || !bytes.Contains([]byte(got), []byte("out\n")) || !bytes.Contains([]byte(got), []byte("err\n")) {
		t.Fatalf("copied %q", got)
	}
	// Once the shim closed its ends the FIFOs go, Close or not: a task
	// deleted through another handle never calls it.
	dir := filepath.Dir(l.cfg.Stdout)
	for i := 0; ; i++ {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		if i == 100 {
			t.Fatal("FIFOs left after the shim closed them")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Attaching again (agent restart) to FIFOs whose shim is gone ends at
	// once instead of waiting for a writer that never comes.
	l2, err := a.newLogIO("u1", "app", &out, "")
	if err != nil {
		t.Fatal(err)
	}
	l2.created()
	att, err := a.attachLogIO(&cio.FIFOSet{Config: l2.cfg}, &out)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { att.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("attaching to FIFOs without a writer blocks")
	}
	att.Close()
	l2.Close()
	// A file log of an older agent is not the agent's to copy.
	old, err := a.attachLogIO(&cio.FIFOSet{Config: cio.Config{Stdout: "file:///x.log", Stderr: "file:///x.log"}}, &out)
	if err != nil || old.Config().Stdout != "file:///x.log" {
		t.Fatalf("attach to a file log: %v", err)
	}
	old.Wait()
	old.Close()
}
