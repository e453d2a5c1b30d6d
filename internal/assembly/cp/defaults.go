package cp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/model"
	"github.com/kanga-run/kanga/internal/server"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Defaults are what the API gives instances and tenants that ask for
// nothing (kanga up and kanga server share them).
type Defaults struct {
	// DefaultType names the instance type whose resources fill in what an
	// instance leaves empty (default model.DefaultInstanceType; "none":
	// no default).
	DefaultType string
	// DefaultQuota is the quota of new tenants in ParseQuota's notation
	// ("" or "none": none).
	DefaultQuota string
	// MaxInflightCreates bounds the creates in flight the API admits
	// (server.Options.MaxInflightCreates): negative for the ready hosts'
	// start slots, 0 for no bound.
	MaxInflightCreates int
}

// APIOptions checks d and turns it into the API's options.
func (d Defaults) APIOptions() (server.Options, error) {
	if err := model.CheckDefaultType("--default-type", d.DefaultType); err != nil {
		return server.Options{}, err
	}
	q, err := model.ParseQuota(d.DefaultQuota)
	if err != nil {
		return server.Options{}, fmt.Errorf("--default-quota: %w", err)
	}
	return server.Options{DefaultType: d.DefaultType, DefaultQuota: q, MaxInflightCreates: d.MaxInflightCreates}, nil
}

// EnsureAdmin returns the data dir's admin token (made on first use),
// registered in the store, and makes sure the default tenant exists.
func EnsureAdmin(ctx context.Context, st *store.Store, dataDir string) (string, error) {
	token, err := adminToken(dataDir)
	if err != nil {
		return "", err
	}
	if n, err := st.MigrateTokens(ctx); err != nil {
		return "", fmt.Errorf("migrating token records: %w", err)
	} else if n > 0 {
		slog.Default().Info("token records migrated to IDs and scopes", "count", n)
	}
	if err := st.PutAdminToken(ctx, token, tenant.Default); err != nil {
		return "", fmt.Errorf("registering the admin token: %w", err)
	}
	if err := st.EnsureTenant(ctx, &api.Tenant{Name: tenant.Default, DefaultRuntime: model.DefaultRuntimeClass, CreatedAt: time.Now().UTC()}); err != nil {
		return "", fmt.Errorf("creating the default tenant: %w", err)
	}
	return token, nil
}

// adminToken returns the data dir's admin token, making one on first use.
func adminToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "admin-token")
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	t := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the admin token: %w", err)
	}
	return t, nil
}
