package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// rawStore is a store on an embedded etcd and a second, raw client of the
// same etcd: what an attacker with access to the database, or an older
// kanga, would write.
func rawStore(t *testing.T) (*store.Store, *clientv3.Client) {
	t.Helper()
	dir := t.TempDir()
	s := open(t, store.Config{DataDir: dir})
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(dir, "etcd.sock")}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return s, raw
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Records written before IDs and scopes get both, and the index entries
// that make tenant deletion revoke them; the database never holds a
// secret.
func TestMigrateTokens(t *testing.T) {
	s, raw := rawStore(t)
	ctx := t.Context()
	if err := s.CreateTenant(ctx, &api.Tenant{Name: "acme"}, "first-secret"); err != nil {
		t.Fatal(err)
	}
	// As kanga wrote them before: {"tenant"} and {"tenant","admin"}, with
	// no index entry for tokens other than a tenant's first.
	for key, val := range map[string]string{
		"/kanga/tokens/" + sha("extra-secret"): `{"tenant":"acme"}`,
		"/kanga/tokens/" + sha("old-admin"):    `{"tenant":"default","admin":true}`,
	} {
		if _, err := raw.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.MigrateTokens(ctx)
	if err != nil || n < 2 {
		t.Fatalf("MigrateTokens = %d, %v; want at least the 2 old records", n, err)
	}
	if n, err := s.MigrateTokens(ctx); err != nil || n != 0 {
		t.Fatalf("MigrateTokens again = %d, %v; want nothing left to do", n, err)
	}
	p, err := s.LookupPrincipal(ctx, "old-admin")
	if err != nil || !p.Admin || !slices.Equal(p.Scopes, []string{api.ScopeEverything}) || p.TokenID != sha("old-admin")[:16] {
		t.Fatalf("old admin token = %+v, %v; want admin with scope * and its ID", p, err)
	}
	p, err = s.LookupPrincipal(ctx, "extra-secret")
	if err != nil || p.Admin || !slices.Equal(p.Scopes, []string{api.ScopeAll}) {
		t.Fatalf("old tenant token = %+v, %v; want tenant scopes", p, err)
	}
	all, err := raw.Get(ctx, "/kanga/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range all.Kvs {
		for _, secret := range []string{"first-secret", "extra-secret", "old-admin"} {
			if strings.Contains(string(kv.Key)+string(kv.Value), secret) {
				t.Fatalf("the secret %q is stored in plain text under %s", secret, kv.Key)
			}
		}
	}
	// The migrated extra token goes with its tenant.
	if err := s.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"first-secret", "extra-secret"} {
		if _, err := s.LookupPrincipal(ctx, tok); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Fatalf("token of the deleted tenant: %v, want unauthenticated", err)
		}
	}
}

func TestScopedAndExpiringTokens(t *testing.T) {
	s, _ := rawStore(t)
	ctx := t.Context()
	if err := s.CreateTenant(ctx, &api.Tenant{Name: "acme"}, "first"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	past := now.Add(-time.Second)
	ro, err := s.CreateToken(ctx, "ro-secret", store.NewTokenInfo{Name: "ro", Tenant: "acme", Scopes: []string{api.ScopeInstancesRead}, CreatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateToken(ctx, "old-secret", store.NewTokenInfo{Tenant: "acme", Scopes: []string{api.ScopeAll}, CreatedAt: now, ExpiresAt: &past}); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateToken(ctx, "x", store.NewTokenInfo{Tenant: "nobody", CreatedAt: now})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("CreateToken for a missing tenant = %v, want not found", err)
	}
	p, err := s.LookupPrincipal(ctx, "ro-secret")
	if err != nil || p.TokenID != ro.ID || p.TokenName != "ro" || !slices.Equal(p.Scopes, []string{api.ScopeInstancesRead}) {
		t.Fatalf("LookupPrincipal(ro) = %+v, %v", p, err)
	}
	p, err = s.LookupPrincipal(ctx, "old-secret")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Expired(now); !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v, want unauthenticated saying expired", err)
	}
	if err := p.Expired(past.Add(-time.Second)); err != nil {
		t.Fatalf("token before its expiry: %v", err)
	}
	toks, err := s.ListTokens(ctx, "acme")
	if err != nil || len(toks) != 3 {
		t.Fatalf("ListTokens = %+v, %v; want 3", toks, err)
	}
	if _, err := s.RevokeToken(ctx, ro.ID, "other"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("RevokeToken from another tenant = %v, want not found", err)
	}
	if _, err := s.RevokeToken(ctx, ro.ID, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupPrincipal(ctx, "ro-secret"); !errors.Is(err, store.ErrUnknownToken) {
		t.Fatalf("revoked token: %v, want unknown", err)
	}
}

// A token created while its tenant is deleted is never left working: it
// either fails (no tenant) or goes with the tenant.
func TestDeleteTenantRacesTokenCreate(t *testing.T) {
	s, _ := rawStore(t)
	ctx := t.Context()
	for round := range 10 {
		name := fmt.Sprintf("race-%d", round)
		if err := s.CreateTenant(ctx, &api.Tenant{Name: name}, "first-"+name); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		secrets := make([]string, 8)
		for i := range secrets {
			secrets[i] = fmt.Sprintf("%s-%d", name, i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = s.CreateToken(ctx, secrets[i], store.NewTokenInfo{Tenant: name, CreatedAt: time.Now()})
			}()
		}
		if err := s.DeleteTenant(ctx, name); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for _, sec := range secrets {
			if p, err := s.LookupPrincipal(ctx, sec); err == nil {
				if _, gerr := s.GetTenant(ctx, name); errors.Is(gerr, errdefs.ErrNotFound) {
					t.Fatalf("token of deleted tenant %s still works: %+v", name, p)
				}
			}
		}
	}
}

func appendN(t *testing.T, s *store.Store, n int, tenantName string) {
	t.Helper()
	var recs []api.AuditRecord
	for i := range n {
		recs = append(recs, api.AuditRecord{Time: time.Now().UTC(), RequestID: fmt.Sprintf("req-%d", i), Tenant: tenantName,
			Verb: "instances.create", Object: fmt.Sprintf("instances/i%d", i), Method: "POST", Path: "/v1/instances", Status: 201})
	}
	if _, err := s.AppendAudit(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
}

// Replicas appending at once share one gapless chain: two stores (two
// control-plane processes) on one etcd, each with concurrent appenders.
func TestAuditChainConcurrent(t *testing.T) {
	s, raw := rawStore(t)
	s2 := open(t, store.Config{Endpoints: raw.Endpoints()})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = s2
			}
			for range 5 {
				appendN(t, st, 3, fmt.Sprintf("t%d", i))
			}
		}()
	}
	wg.Wait()
	v, err := s.VerifyAudit(t.Context())
	if err != nil || !v.OK || v.Records != 60 {
		t.Fatalf("VerifyAudit = %+v, %v; want 60 records, intact", v, err)
	}
	recs, err := s.ListAudit(t.Context(), store.AuditFilter{Tenant: "t2"})
	if err != nil || len(recs) != 15 {
		t.Fatalf("ListAudit(t2) = %d records, %v; want 15", len(recs), err)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq <= recs[i-1].Seq {
			t.Fatalf("records out of order: %d after %d", recs[i].Seq, recs[i-1].Seq)
		}
	}
	if recs, _ := s.ListAudit(t.Context(), store.AuditFilter{Limit: 5}); len(recs) != 5 || recs[4].Seq != 60 {
		t.Fatalf("ListAudit(limit 5) = %+v; want the newest 5, ending at 60", recs)
	}
}

// Each way of tampering with the stored log is reported, naming the
// record.
func TestAuditVerifyFindsTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, raw *clientv3.Client, key func(int64) string)
		seq    int64
		want   string
	}{
		{"flipped byte in a value", func(t *testing.T, raw *clientv3.Client, key func(int64) string) {
			flip(t, raw, key(3), `"instances/i2"`, `"instances/j2"`)
		}, 3, "does not match its hash"},
		{"flipped byte that breaks the JSON", func(t *testing.T, raw *clientv3.Client, key func(int64) string) {
			flip(t, raw, key(4), `{"seq"`, `["seq"`)
		}, 4, "not a valid record"},
		{"record rewritten with a fresh hash", func(t *testing.T, raw *clientv3.Client, key func(int64) string) {
			resp, _ := raw.Get(t.Context(), key(2))
			rec := decodeAudit(t, resp.Kvs[0].Value)
			rec.Status = 403
			rec.Hash = store.AuditHash(rec)
			put(t, raw, key(2), rec)
		}, 3, "does not follow record 2"},
		{"record removed", func(t *testing.T, raw *clientv3.Client, key func(int64) string) {
			if _, err := raw.Delete(t.Context(), key(3)); err != nil {
				t.Fatal(err)
			}
		}, 4, "missing"},
		{"tail removed", func(t *testing.T, raw *clientv3.Client, key func(int64) string) {
			if _, err := raw.Delete(t.Context(), key(5)); err != nil {
				t.Fatal(err)
			}
		}, 5, "last record is 4"},
		{"field added", func(t *testing.T, raw *clientv3.Client, key func(int64) string) {
			flip(t, raw, key(1), `{"seq"`, `{"x":1,"seq"`)
		}, 1, "not a valid record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, raw := rawStore(t)
			appendN(t, s, 5, "acme")
			if v, err := s.VerifyAudit(t.Context()); err != nil || !v.OK {
				t.Fatalf("VerifyAudit before tampering = %+v, %v", v, err)
			}
			tt.tamper(t, raw, func(seq int64) string { return fmt.Sprintf("/kanga/audit/log/%020d", seq) })
			v, err := s.VerifyAudit(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if v.OK {
				t.Fatal("VerifyAudit after tampering: OK")
			}
			found := false
			for _, p := range v.Problems {
				if p.Seq == tt.seq && strings.Contains(p.Problem, tt.want) {
					found = true
				}
			}
			if !found {
				t.Fatalf("problems %+v: want record %d reported with %q", v.Problems, tt.seq, tt.want)
			}
			// Appending still works, onto the head.
			appendN(t, s, 1, "acme")
		})
	}
}

func flip(t *testing.T, raw *clientv3.Client, key, from, to string) {
	t.Helper()
	resp, err := raw.Get(t.Context(), key)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("get %s: %v", key, err)
	}
	v := string(resp.Kvs[0].Value)
	if !strings.Contains(v, from) {
		t.Fatalf("%s = %s: no %q to change", key, v, from)
	}
	if _, err := raw.Put(t.Context(), key, strings.Replace(v, from, to, 1)); err != nil {
		t.Fatal(err)
	}
}

func decodeAudit(t *testing.T, b []byte) api.AuditRecord {
	t.Helper()
	var rec api.AuditRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func put(t *testing.T, raw *clientv3.Client, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(t.Context(), key, string(b)); err != nil {
		t.Fatal(err)
	}
}

// The host-name rules of joining: a join token claims only its own host,
// the shared token only new names, nobody a connected host's name or a
// name another token holds; revoking frees the name for a new token only.
func TestClaimHost(t *testing.T) {
	s, _ := rawStore(t)
	ctx := t.Context()
	tok := func(id, host string) {
		t.Helper()
		if err := s.CreateJoinToken(ctx, store.JoinTokenRecord{ID: id, Host: host, SecretHash: "x", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	tok("tokh1", "h1")
	tok("tokh1b", "h1")
	wantErr := func(err, class error, what string) {
		t.Helper()
		if !errors.Is(err, class) {
			t.Fatalf("%s: %v, want %v", what, err, class)
		}
	}
	wantErr(s.ClaimHost(ctx, "h2", "tokh1", "s1"), errdefs.ErrPermissionDenied, "token for h1 claiming h2")
	if err := s.ClaimHost(ctx, "h1", "tokh1", "s1"); err != nil {
		t.Fatal(err)
	}
	wantErr(s.ClaimHost(ctx, "h1", "tokh1b", "s2"), errdefs.ErrAlreadyExists, "second token for a held name")
	wantErr(s.ClaimHost(ctx, "h1", store.OwnerShared, "s3"), errdefs.ErrAlreadyExists, "shared token for a held name")
	// The same token again (a lost data dir): both certificates count.
	if err := s.ClaimHost(ctx, "h1", "tokh1", "s4"); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.GetHostOwner(ctx, "h1"); o == nil || !slices.Equal(o.Serials, []string{"s1", "s4"}) || o.Token != "tokh1" {
		t.Fatalf("owner of h1 = %+v", o)
	}
	// Not while the host is connected.
	if err := s.RegisterHost(ctx, &api.Host{Name: "h1"}); err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	go func() { _ = s.KeepHostAlive(lctx, "h1", 5*time.Second) }()
	waitFor(t, func() bool { h, _ := s.GetHost(ctx, "h1"); return h != nil && h.Status.Phase == api.HostReady })
	wantErr(s.ClaimHost(ctx, "h1", "tokh1", "s5"), errdefs.ErrAlreadyExists, "join as a connected host")
	stop()

	// A registered host that never had an owner record (joined before
	// the upgrade) is not taken by the shared token either.
	if err := s.RegisterHost(ctx, &api.Host{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	wantErr(s.ClaimHost(ctx, "old", store.OwnerShared, "s6"), errdefs.ErrAlreadyExists, "shared token for a registered name")
	if err := s.ClaimHost(ctx, "new", store.OwnerShared, "s7"); err != nil {
		t.Fatalf("shared token for a new name: %v", err)
	}

	// Revoking h1's token revokes its certificates and frees the name
	// for the other token, not for the shared one.
	rec, serials, err := s.RevokeJoinToken(ctx, "tokh1")
	if err != nil || rec.Host != "h1" || !slices.Equal(serials, []string{"s1", "s4"}) {
		t.Fatalf("RevokeJoinToken = %+v %v %v", rec, serials, err)
	}
	wantErr(s.ClaimHost(ctx, "h1", "tokh1", "s8"), errdefs.ErrUnauthenticated, "revoked token")
	waitFor(t, func() bool { h, _ := s.GetHost(ctx, "h1"); return h != nil && h.Status.Phase != api.HostReady })
	wantErr(s.ClaimHost(ctx, "h1", store.OwnerShared, "s9"), errdefs.ErrAlreadyExists, "shared token after revocation")
	if err := s.ClaimHost(ctx, "h1", "tokh1b", "s10"); err != nil {
		t.Fatalf("new token after revocation: %v", err)
	}
	toks, serials, err := s.RevokeHost(ctx, "h1")
	if err != nil || !slices.Equal(toks, []string{"tokh1b"}) || !slices.Equal(serials, []string{"s10"}) {
		t.Fatalf("RevokeHost = %v %v %v", toks, serials, err)
	}
	if o, _ := s.GetHostOwner(ctx, "h1"); o == nil || !o.Revoked || len(o.Serials) != 0 {
		t.Fatalf("owner after RevokeHost = %+v, want a revoked record", o)
	}
	if ok, err := s.AdoptHostCert(ctx, "h1", "s1"); ok || err != nil {
		t.Fatalf("AdoptHostCert of a revoked host = %v, %v; want refused", ok, err)
	}
	if _, _, err := s.RevokeHost(ctx, "nowhere"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("RevokeHost(unknown) = %v, want not found", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 15s")
}

func usageRec(inst *api.Instance, host string, seq int64, start time.Time, secs int, final bool) api.UsageRecord {
	r := api.UsageRecord{Tenant: inst.Tenant, Instance: inst.Name, UID: inst.UID, Host: host, Seq: seq, Start: start,
		End: start.Add(time.Duration(secs) * time.Second), Final: final, CPUMilli: 500, MemoryBytes: 1 << 30}
	for range secs {
		r.Points = append(r.Points, api.UsagePoint{1000, 250_000_000, 512 << 20, 100})
	}
	return r
}

// Records count once however often they are sent; only the host an
// instance was placed on may report it; sums are clipped to the period.
func TestUsageRecords(t *testing.T) {
	s, _ := rawStore(t)
	ctx := tenant.WithName(t.Context(), "acme")
	inst := &api.Instance{Name: "web", Tenant: "acme", UID: "uid-1", Status: api.InstanceStatus{Host: "h1"}}
	if err := s.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateInstance(ctx, "web", func(in *api.Instance) error { in.Status.Host = "h1"; return nil }); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	recs := []api.UsageRecord{usageRec(inst, "h1", 0, t0, 10, false), usageRec(inst, "h1", 1, t0.Add(10*time.Second), 10, false)}
	for range 3 { // sent again and again after crashes
		if refused, err := s.PutUsage(ctx, "h1", recs); err != nil || len(refused) != 0 {
			t.Fatalf("PutUsage = %v, %v", refused, err)
		}
	}
	if refused, err := s.PutUsage(ctx, "h2", []api.UsageRecord{usageRec(inst, "h2", 2, t0.Add(20*time.Second), 5, false)}); err != nil || len(refused) != 1 {
		t.Fatalf("PutUsage from another host = %v, %v; want refused", refused, err)
	}
	bad := usageRec(inst, "h1", 3, t0.Add(20*time.Second), 5, false)
	bad.Points = bad.Points[:2] // covers 2 s of a 5 s interval
	if refused, err := s.PutUsage(ctx, "h1", []api.UsageRecord{bad}); err != nil || len(refused) != 1 {
		t.Fatalf("PutUsage of a malformed record = %v, %v; want refused", refused, err)
	}
	// The instance is gone: the host's final record still lands (it owns
	// the instance), and a resend too.
	if err := s.DeleteInstance(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	final := []api.UsageRecord{usageRec(inst, "h1", 2, t0.Add(20*time.Second), 4, true)}
	for range 2 {
		if refused, err := s.PutUsage(ctx, "h1", final); err != nil || len(refused) != 0 {
			t.Fatalf("final PutUsage = %v, %v", refused, err)
		}
	}
	items, err := s.Usage(ctx, store.UsageQuery{Tenant: "acme", Since: t0, Until: t0.Add(time.Hour), ByInstance: true})
	if err != nil || len(items) != 1 {
		t.Fatalf("Usage = %+v, %v", items, err)
	}
	it := items[0]
	if it.Seconds != 24 || it.VCPUSecondsPromised != 12 || it.VCPUSecondsUsed != 6 || it.GiBSecondsPromised != 24 ||
		it.GiBSecondsUsed != 12 || it.EgressBytes != 2400 || it.Records != 3 || !it.Final {
		t.Fatalf("usage = %+v; want 24 s, 12 vCPU-s promised, 6 used, 24 GiB-s promised, 12 used, 2400 B, 3 records, final", it)
	}
	// Clipped: 5 s inside the period.
	items, _ = s.Usage(ctx, store.UsageQuery{Tenant: "acme", Since: t0.Add(7 * time.Second), Until: t0.Add(12 * time.Second)})
	if len(items) != 1 || items[0].Seconds != 5 || items[0].VCPUSecondsPromised != 2.5 {
		t.Fatalf("clipped usage = %+v; want 5 s, 2.5 vCPU-s", items)
	}
	if items, _ := s.Usage(ctx, store.UsageQuery{Tenant: "other", Since: t0, Until: t0.Add(time.Hour)}); len(items) != 0 {
		t.Fatalf("another tenant's usage = %+v; want none", items)
	}
}
