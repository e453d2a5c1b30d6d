package hostlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/pki"
	"github.com/kanga-run/kanga/internal/store"
)

func wantClass(t *testing.T, what string, err, class error, msg string) {
	t.Helper()
	if !errors.Is(err, class) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("%s: %v; want %v saying %q", what, err, class, msg)
	}
}

// Host-name squatting: a join token or certificate for host H never acts
// as G, no join takes over a name another agent holds, and a revoked
// token neither joins again nor keeps its certificate working (open
// streams included).
func TestJoinTokensAndSquatting(t *testing.T) {
	st, c := realCluster(t)
	ctx := t.Context()
	auth := &Authority{Store: st, CA: c.ca}
	_, tokH1, err := auth.CreateJoinToken(ctx, "h1", time.Hour, "admin-id")
	if err != nil {
		t.Fatal(err)
	}
	join := func(token, name string) (*Credentials, error) {
		return Join(ctx, c.url, token, t.TempDir(), name, []string{"127.0.0.1"})
	}

	_, err = join(tokH1, "h2")
	wantClass(t, "h1's token joining as h2", err, errdefs.ErrPermissionDenied, `bound to host "h1"`)
	credsH1, err := join(tokH1, "h1")
	if err != nil {
		t.Fatalf("h1 joining with its token: %v", err)
	}
	_, err = join(c.token.String(), "h1")
	wantClass(t, "shared token taking h1", err, errdefs.ErrAlreadyExists, "taken")
	_, tokH1b, _ := auth.CreateJoinToken(ctx, "h1", time.Hour, "admin-id")
	_, err = join(tokH1b, "h1")
	wantClass(t, "a second token taking h1", err, errdefs.ErrAlreadyExists, "held by another agent")
	badSecret := tokH1[:len(tokH1)-4] + "0000"
	_, err = join(badSecret, "h1")
	wantClass(t, "a mistyped join token", err, errdefs.ErrUnauthenticated, "not valid")

	// h1's certificate does not act as h2.
	wrong := NewLink(c.url, "h2", credsH1, nil)
	if _, _, err := wrong.ListAllInstances(ctx); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("h1's certificate listing h2's instances: %v, want permission denied", err)
	}

	// h1 connects: registered and leased, with its instance stream open.
	l := NewLink(c.url, "h1", credsH1, nil)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go l.Run(lctx, func() api.Host { return api.Host{Name: "h1", RuntimeClasses: []string{"runc"}} })
	waitReady(t, st, "h1", true)
	_, rev, err := l.ListAllInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream := l.WatchAllInstances(lctx, rev)
	_, err = join(tokH1, "h1")
	wantClass(t, "joining as a connected host", err, errdefs.ErrAlreadyExists, "connected")

	// Revoked: the link refuses the certificate at once and cuts the
	// host's open requests, so its lease runs out.
	if _, err := auth.RevokeJoinToken(ctx, strings.SplitN(strings.SplitN(tokH1, "::", 2)[1], ".", 2)[0]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, err := l.ListAllInstances(ctx)
		if errors.Is(err, errdefs.ErrUnauthenticated) {
			if !strings.Contains(err.Error(), "revoked") {
				t.Fatalf("refusal %q does not say revoked", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked certificate still accepted: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitReady(t, st, "h1", false)
	select {
	case ev, ok := <-stream:
		if ok {
			t.Logf("stream delivered %+v before it was cut", ev)
		}
	default:
	}
	_, err = join(tokH1, "h1")
	wantClass(t, "joining with a revoked token", err, errdefs.ErrUnauthenticated, "")
	// The name is free for a token issued for it, not for the shared one.
	_, err = join(c.token.String(), "h1")
	wantClass(t, "shared token after revocation", err, errdefs.ErrAlreadyExists, "taken")
	if _, err := join(tokH1b, "h1"); err != nil {
		t.Fatalf("joining with h1's second token after the first was revoked: %v", err)
	}

	// Joins with a valid token are in the audit log, refused ones too.
	recs, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range recs {
		if r.Verb == "hosts.join" {
			got[fmt.Sprintf("%s %d", r.Object, r.Status)] = true
		}
	}
	for _, want := range []string{"hosts/h1 200", "hosts/h2 403", "hosts/h1 409"} {
		if !got[want] {
			t.Errorf("audit log lacks the join %q: has %v", want, got)
		}
	}

	// Expired tokens do not join.
	_, tokOld, _ := auth.CreateJoinToken(ctx, "h9", time.Millisecond, "admin-id")
	time.Sleep(5 * time.Millisecond)
	_, err = join(tokOld, "h9")
	wantClass(t, "an expired join token", err, errdefs.ErrUnauthenticated, "expired")
}

// A host that joined before owners were recorded keeps working (its
// certificate is adopted on first use) and can be revoked like any.
func TestLegacyAgentCertificate(t *testing.T) {
	st, c := realCluster(t)
	ctx := t.Context()
	csr, keyPEM, err := pki.NewCSR("old", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.ca.SignAgentCSR(csr, "old")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	creds := &Credentials{Cert: cert, CA: c.ca.Cert}
	l := NewLink(c.url, "old", creds, nil)
	if _, _, err := l.ListAllInstances(ctx); err != nil {
		t.Fatalf("a pre-upgrade certificate: %v", err)
	}
	owner, err := st.GetHostOwner(ctx, "old")
	if err != nil || owner == nil || owner.Token != store.OwnerLegacy || len(owner.Serials) != 1 {
		t.Fatalf("owner after first use = %+v, %v", owner, err)
	}
	// A second pre-upgrade certificate for the same name is not adopted.
	csr2, key2, _ := pki.NewCSR("old", nil)
	cert2PEM, _ := c.ca.SignAgentCSR(csr2, "old")
	cert2, _ := tls.X509KeyPair(cert2PEM, key2)
	l2 := NewLink(c.url, "old", &Credentials{Cert: cert2, CA: c.ca.Cert}, nil)
	if _, _, err := l2.ListAllInstances(ctx); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Fatalf("another certificate for an adopted host: %v, want refused", err)
	}
	auth := &Authority{Store: st, CA: c.ca}
	rev, err := auth.RevokeHost(ctx, "old")
	if err != nil || len(rev.Certificates) != 1 {
		t.Fatalf("RevokeHost = %+v, %v", rev, err)
	}
	waitRefused(t, l)
}

func waitRefused(t *testing.T, l *Link) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, _, err := l.ListAllInstances(t.Context())
		if errors.Is(err, errdefs.ErrUnauthenticated) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked certificate still accepted: %v", err)
		}
	}
}

func waitReady(t *testing.T, st *store.Store, host string, ready bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		h, err := st.GetHost(t.Context(), host)
		if err == nil && (h.Status.Phase == api.HostReady) == ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("host %s ready=%v not reached: %+v %v", host, ready, h, err)
		}
	}
}
