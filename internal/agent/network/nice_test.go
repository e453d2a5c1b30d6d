package network

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A CNI plugin runs helperNice above the agent; the agent's threads keep
// their niceness.
func TestPluginsRunNiced(t *testing.T) {
	plugin := filepath.Join(t.TempDir(), "print-nice")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\nnice\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	own := 20 - raw
	if own+helperNice > 19 {
		t.Skipf("the test runs at nice %d: no room below it", own)
	}
	for range 3 {
		out, err := newNiceExec().ExecPlugin(t.Context(), plugin, nil, os.Environ())
		if err != nil {
			t.Fatal(err)
		}
		got, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil || got != own+helperNice {
			t.Fatalf("plugin ran at nice %q, want %d", out, own+helperNice)
		}
	}
	if raw2, _ := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid()); raw2 != raw {
		t.Fatalf("the calling thread's nice is %d after the plugins, was %d", 20-raw2, own)
	}
}
