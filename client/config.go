package client

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/atomicfile"
)

// DefaultAddr is the address `kanga up` listens on unless told otherwise.
const DefaultAddr = "http://127.0.0.1:7420"

// Environment variables read by ResolveConfig and FromEnv.
const (
	EnvAddr   = "KANGA_ADDR"
	EnvToken  = "KANGA_TOKEN"
	EnvConfig = "KANGA_CONFIG"
)

// Config is the content of the client config file, written by `kanga up`.
type Config struct {
	Addr  string `json:"addr"`
	Token string `json:"token"`
	// CACert is the PEM certificate of the CA that signed an https
	// server's certificate (kanga server runs its own CA); empty: the
	// system roots.
	CACert string `json:"caCert,omitempty"`
}

// Options returns the client options the config implies: TLS verified
// against CACert when it is set.
func (c Config) Options() ([]Option, error) {
	if c.CACert == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CACert)) {
		return nil, fmt.Errorf("kanga config: caCert holds no PEM certificate: copy the config the server wrote again: %w", errdefs.ErrInvalidArgument)
	}
	return []Option{WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})}, nil
}

// DefaultConfigPath returns $KANGA_CONFIG, or else $HOME/.kanga/config.json.
func DefaultConfigPath() (string, error) {
	if p := os.Getenv(EnvConfig); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("locating the kanga config file: %w; set %s", err, EnvConfig)
	}
	return filepath.Join(home, ".kanga", "config.json"), nil
}

// LoadConfig reads the config file at path. A missing file is an error
// wrapping both fs.ErrNotExist and errdefs.ErrNotFound.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return cfg, withClass(fmt.Errorf("kanga config %s: %w", path, err), errdefs.ErrNotFound)
		}
		return cfg, fmt.Errorf("reading kanga config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("kanga config %s is not valid JSON (%v): %w", path, err, errdefs.ErrInvalidArgument)
	}
	return cfg, nil
}

// WriteConfig writes cfg to path with mode 0600, creating the directory with
// mode 0700: the file holds a bearer token. It replaces an existing file
// atomically.
func WriteConfig(path string, cfg Config) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the config directory: %w", err)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing kanga config: %w", err)
	}
	return nil
}

// ResolveConfig returns the effective client configuration: the file at
// path (DefaultConfigPath when empty; a missing file is fine), overridden
// by $KANGA_ADDR and $KANGA_TOKEN, with DefaultAddr when no address is set.
func ResolveConfig(path string) (Config, error) {
	if path == "" {
		p, err := DefaultConfigPath()
		if err != nil && os.Getenv(EnvAddr) == "" {
			return Config{}, err
		}
		path = p
	}
	var cfg Config
	if path != "" {
		c, err := LoadConfig(path)
		switch {
		case err == nil:
			cfg = c
		case errors.Is(err, fs.ErrNotExist):
		default:
			return Config{}, err
		}
	}
	if v := os.Getenv(EnvAddr); v != "" {
		cfg.Addr = v
	}
	if v := os.Getenv(EnvToken); v != "" {
		cfg.Token = v
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	return cfg, nil
}

// FromEnv returns a client configured by ResolveConfig("").
func FromEnv(opts ...Option) (*Client, error) {
	cfg, err := ResolveConfig("")
	if err != nil {
		return nil, err
	}
	return New(cfg.Addr, cfg.Token, opts...)
}
