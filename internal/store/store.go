// Package store keeps Kanga's control-plane state in etcd: instances per
// tenant, bearer tokens and, later, other small records.
//
// By default the store embeds a single-member etcd server in the kanga
// process (kanga up); Config.Endpoints points it at an external cluster
// instead. Both speak to etcd only through the official clientv3, so the
// same code and the same conformance suite (package storetest) cover both.
//
// Key layout:
//
//	/kanga/instances/<tenant>/<name>  JSON api.Instance
//	/kanga/tokens/<sha256(token) hex>  JSON {"tenant": ...}
//	/kanga/usage/<tenant>              JSON api.QuotaAmounts (see usage.go)
//	/kanga/secrets/<tenant>/<name>     secrets, encrypted (see objects.go)
//	/kanga/configs/<tenant>/<name>     configs
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/secretkeys"
)

// Config says where the store's etcd lives.
type Config struct {
	// DataDir holds the embedded etcd's data (DataDir/etcd) and its client
	// socket. It is required unless Endpoints is set.
	DataDir string
	// Endpoints, if set, are the client URLs of an external etcd cluster
	// (http://host:2379 or unix:///path); nothing is embedded then.
	Endpoints []string
	// Logger receives the store's log and etcd's errors; nil discards them.
	Logger *slog.Logger
	// SecretKeyFile holds the keys that encrypt secrets (see package
	// secretkeys); default DataDir/secret-keys, created on first use.
	SecretKeyFile string
}

// Store is Kanga's state store. It is safe for concurrent use.
type Store struct {
	client *clientv3.Client
	// ctl is a second connection to etcd for the control path only: the
	// host leases and the control-plane election (their keep-alives,
	// grants and campaigns). gRPC multiplexes every call of a client on
	// one connection, with one flow-control window and one in-flight
	// limit (inFlightLimit); a burst of instance writes queued there
	// would delay a keep-alive past the lease's TTL and turn an
	// overloaded host into a lost one (issue 22). Nothing else uses ctl.
	ctl *clientv3.Client
	// slots are client's in-flight slots (inFlightLimit).
	slots  chan struct{}
	server *embed.Etcd // nil with an external cluster
	lock   *os.File    // the data directory's lock, with server
	logger *slog.Logger
	// closing silences etcd's log during Close.
	closing atomic.Bool

	// auditMu orders this process's audit appends; auditHead is the head
	// it wrote last, at revision auditHeadRev (0: read it).
	auditMu      sync.Mutex
	auditHead    auditHead
	auditHeadRev int64
	// usage remembers, per tenant, the quota usage record this store
	// wrote last (a usageRecord): a guess that saves creates a read.
	usage sync.Map

	// The secret key ring (objects.go), loaded on first use from keyFile;
	// rotateMu keeps this process to one rotation at a time.
	keysMu   sync.Mutex
	keys     *secretkeys.Ring
	keyFile  string
	rotateMu sync.Mutex
}

// dialTimeout bounds how long Open waits for an external cluster to answer.
const dialTimeout = 10 * time.Second

// Open connects to etcd, starting the embedded server first unless
// cfg.Endpoints is set, and returns once etcd serves requests.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// etcd logs a great deal at info and warn; only its errors are worth
	// kanga's log.
	s := &Store{logger: logger, keyFile: cfg.SecretKeyFile}
	if s.keyFile == "" && cfg.DataDir != "" {
		s.keyFile = filepath.Join(cfg.DataDir, secretkeys.FileName)
	}
	zl := newZapLogger(logger.With("component", "etcd"), zapcore.ErrorLevel, &s.closing)
	endpoints := cfg.Endpoints
	if len(endpoints) == 0 {
		if cfg.DataDir == "" {
			return nil, fmt.Errorf("store: a data directory or etcd endpoints are required: %w", errdefs.ErrInvalidArgument)
		}
		dir, lock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		srv, ep, err := startEmbedded(ctx, dir, zl)
		if err != nil {
			lock.Close()
			return nil, err
		}
		s.server, s.lock = srv, lock
		endpoints = []string{ep}
	}

	ccfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		Logger:      zl,
		// Without this a client keeps a dead connection until the next
		// request times out; with it a broken watch is noticed and resumed.
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
	}
	// The control connection has no in-flight limit: its few calls must
	// never wait behind the data path's.
	ctl, err := clientv3.New(ccfg)
	if err != nil {
		s.closeServer()
		return nil, fmt.Errorf("store: connect to etcd at %v: %v: %w", endpoints, err, errdefs.ErrUnavailable)
	}
	s.ctl = ctl
	s.slots = make(chan struct{}, maxInFlight)
	ccfg.DialOptions = []grpc.DialOption{grpc.WithChainUnaryInterceptor(inFlightLimit(s.slots))}
	client, err := clientv3.New(ccfg)
	if err != nil {
		_ = ctl.Close()
		s.closeServer()
		return nil, fmt.Errorf("store: connect to etcd at %v: %v: %w", endpoints, err, errdefs.ErrUnavailable)
	}
	s.client = client

	// clientv3.New does not wait for a connection: make sure etcd answers
	// now, so that a wrong endpoint fails at startup and not at the first
	// request.
	pctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if _, err := client.Get(pctx, "/kanga/", clientv3.WithCountOnly()); err != nil {
		_ = s.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("store: etcd at %v does not answer: %v: check that it runs and the endpoints are right: %w",
			endpoints, err, errdefs.ErrUnavailable)
	}
	if s.server != nil {
		logger.Info("embedded etcd ready", "dir", s.server.Config().Dir, "endpoint", endpoints[0])
	}
	return s, nil
}

// Close closes the client and stops the embedded server, if any.
func (s *Store) Close() error {
	var err error
	for _, c := range []*clientv3.Client{s.client, s.ctl} {
		if c == nil {
			continue
		}
		// A client closed before its context is canceled reports
		// context.Canceled; that is a clean close.
		if cerr := c.Close(); cerr != nil && !errors.Is(cerr, context.Canceled) && err == nil {
			err = cerr
		}
	}
	s.closeServer()
	return err
}

func (s *Store) closeServer() {
	s.closing.Store(true)
	if s.server != nil {
		s.server.Close()
		<-s.server.Server.StopNotify()
		s.server = nil
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
}

// etcdErr classifies an error from the etcd client. The caller's own
// cancellation wins; everything else means etcd could not serve the
// request.
func (s *Store) etcdErr(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("store: %s: %w", op, ctxErr)
	}
	if s.client.Ctx().Err() != nil {
		return fmt.Errorf("store: %s: the store is closed: %w", op, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("store: %s: %w: %w", op, err, errdefs.ErrUnavailable)
}

// retryPause is how long a broken watch waits before it reconnects, so
// that an etcd outage does not turn into a busy loop.
const retryPause = 250 * time.Millisecond

// pause waits retryPause. It fails when ctx ends or the store is closed.
func (s *Store) pause(ctx context.Context) error {
	t := time.NewTimer(retryPause)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.client.Ctx().Done():
		return fmt.Errorf("store: the store is closed: %w", errdefs.ErrUnavailable)
	}
}
