package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/pki"
)

// runServer runs RunServer on dataDir until the returned stop is called.
func runServer(t *testing.T, dataDir string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- RunServer(ctx, ServerOptions{DataDir: dataDir, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0",
			ReplicaName: "test", Logger: slog.New(slog.DiscardHandler), Ready: func(string, string) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("RunServer: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("RunServer did not become ready")
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunServer: %v", err)
		}
	}
}

// TestServerKeepsCAAndTokenAcrossRestarts: the CA and the join token live
// in the store, so a restarted server accepts the agents it signed before
// and the token it handed out.
func TestServerKeepsCAAndTokenAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	read := func() (token pki.Token, caHash string) {
		b, err := os.ReadFile(filepath.Join(dir, JoinTokenFile))
		if err != nil {
			t.Fatal(err)
		}
		token, err = pki.ParseToken(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
		if err != nil {
			t.Fatal(err)
		}
		ca, err := pki.ParseCert(caPEM)
		if err != nil {
			t.Fatal(err)
		}
		return token, pki.CertHash(ca)
	}

	stop := runServer(t, dir)
	tok1, hash1 := read()
	stop()
	if tok1.CAHash != hash1 {
		t.Fatalf("join token pins CA %s, but the server's CA is %s", tok1.CAHash, hash1)
	}
	// Remove the files: the second run must write them again from the store.
	os.Remove(filepath.Join(dir, JoinTokenFile))
	os.Remove(filepath.Join(dir, CAFile))
	stop = runServer(t, dir)
	tok2, hash2 := read()
	stop()
	if tok2 != tok1 || hash2 != hash1 {
		t.Fatalf("after a restart: token %v CA %s; before: token %v CA %s", tok2, hash2, tok1, hash1)
	}
}
