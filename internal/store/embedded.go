package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/kanga-run/kanga/errdefs"
)

const (
	// maxSocketPath is the usable length of a unix socket path on Linux
	// (sun_path is 108 bytes including the terminating NUL).
	maxSocketPath = 107
	// startTimeout bounds the embedded server's start; replaying a large
	// WAL is the slow case.
	startTimeout = 2 * time.Minute
	// compactionRetention keeps this much history for watchers that fall
	// behind; older revisions are compacted so the database stays small
	// under a steady stream of status updates.
	compactionRetention = "10m"
)

// lockDataDir creates dataDir and takes an exclusive lock on it, held
// until the returned file is closed. etcd's own database lock would make a
// second kanga on the same directory wait forever; this fails at once.
func lockDataDir(dataDir string) (string, *os.File, error) {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return "", nil, fmt.Errorf("store: data directory %q: %w", dataDir, err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", nil, fmt.Errorf("store: create data directory: %w", err)
	}
	path := filepath.Join(dataDir, "etcd.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("store: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return "", nil, fmt.Errorf("store: data directory %s is in use by another kanga process: stop it or choose another data directory: %w",
				dataDir, errdefs.ErrFailedPrecondition)
		}
		return "", nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	return dataDir, f, nil
}

// startEmbedded starts a single-member etcd with its data in
// dataDir/etcd and returns it with the client endpoint to dial.
//
// The client listener is a unix socket in dataDir, so several kanga
// processes on one machine never fight over ports, and only users who may
// enter dataDir (0700) can reach the database. When the socket path is too
// long for a unix socket, it falls back to 127.0.0.1 on a port the kernel
// picks. The server has no peer listener: a single member never talks to
// peers, and a listener would only be one more open port.
//
// The caller must hold the data directory's lock (lockDataDir).
func startEmbedded(ctx context.Context, dataDir string, zl *zap.Logger) (*embed.Etcd, string, error) {

	cfg := embed.NewConfig()
	cfg.Name = "kanga"
	cfg.Dir = filepath.Join(dataDir, "etcd")
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)

	sock := filepath.Join(dataDir, "etcd.sock")
	clientURL := url.URL{Scheme: "unix", Path: sock}
	if len(sock) > maxSocketPath {
		clientURL = url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	}
	cfg.ListenClientUrls = []url.URL{clientURL}
	// Advertised URLs are only recorded in the member list; nobody dials
	// them. They must parse as host:port.
	cfg.AdvertiseClientUrls = []url.URL{{Scheme: "http", Host: "127.0.0.1:0"}}
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{{Scheme: "http", Host: "127.0.0.1:0"}}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	// A single member elects itself after a few ticks; short ticks make
	// startup take tens of milliseconds instead of hundreds. There are no
	// peers, so heartbeats cost nothing.
	cfg.TickMs = 25
	cfg.ElectionMs = 250

	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = compactionRetention

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("store: start embedded etcd in %s: %v: %w", cfg.Dir, err, errdefs.ErrUnavailable)
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", fmt.Errorf("store: embedded etcd in %s failed to start: %v: %w", cfg.Dir, err, errdefs.ErrUnavailable)
	case <-timer.C:
		e.Close()
		return nil, "", fmt.Errorf("store: embedded etcd in %s not ready after %s: %w", cfg.Dir, startTimeout, errdefs.ErrUnavailable)
	case <-ctx.Done():
		e.Close()
		return nil, "", ctx.Err()
	}

	endpoint := "unix://" + sock
	if clientURL.Scheme != "unix" {
		endpoint = "http://" + e.Clients[0].Addr().String()
	}
	return e, endpoint, nil
}
