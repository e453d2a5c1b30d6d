package cp

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/pki"
)

// runServer runs Run on dataDir until the returned stop is called.
func runServer(t *testing.T, dataDir string) (stop func()) {
	return runServerWith(t, Options{DataDir: dataDir})
}

func runServerWith(t *testing.T, o Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		o.Listen, o.AgentListen, o.ReplicaName = "127.0.0.1:0", "127.0.0.1:0", "test"
		o.Logger = slog.New(slog.DiscardHandler)
		o.Ready = func(string, string) { close(ready) }
		done <- Run(ctx, o)
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("Run did not become ready")
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
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

// TestServerAPIOverTLS: the client config the server writes reaches the
// API over HTTPS, verifying the server against the cluster CA it carries;
// a client that trusts only the system roots is refused.
func TestServerAPIOverTLS(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "client.json")
	stop := runServerWith(t, Options{DataDir: filepath.Join(dir, "srv"), ConfigPath: cfgPath})
	defer stop()
	cfg, err := client.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cfg.Addr, "https://") || cfg.CACert == "" {
		t.Fatalf("client config: addr %q, CA %d bytes; want https and the CA", cfg.Addr, len(cfg.CACert))
	}
	opts, err := cfg.Options()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg.Addr, cfg.Token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Version(t.Context()); err != nil {
		t.Fatalf("version over TLS with the config's CA: %v", err)
	}
	plain, err := client.New(cfg.Addr, cfg.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Version(t.Context()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("version without the CA: %v, want a certificate verification error", err)
	}
}
