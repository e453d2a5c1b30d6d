package pki

import (
	"crypto/x509"
	"strings"
	"testing"
)

func TestSignAgentCSRForcesIdentity(t *testing.T) {
	certPEM, keyPEM, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The CSR asks for another name and the servers' organization.
	csr, _, err := NewCSR("someone-else", []string{"127.0.0.1", "agent.example"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := ca.SignAgentCSR(csr, "h1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCert(out)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "h1" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != Agents {
		t.Fatalf("subject %v, want CN=h1 O=%s", c.Subject, Agents)
	}
	if len(c.DNSNames) != 1 || c.DNSNames[0] != "agent.example" || len(c.IPAddresses) != 1 {
		t.Fatalf("SANs %v %v, want the CSR's", c.DNSNames, c.IPAddresses)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("verify against the CA: %v", err)
	}
	if _, err := ca.SignAgentCSR([]byte("garbage"), "h1"); err == nil {
		t.Fatal("signing garbage succeeded")
	}
}

func TestToken(t *testing.T) {
	certPEM, keyPEM, _ := NewCA("test")
	ca, _ := LoadCA(certPEM, keyPEM)
	tok := NewToken(ca)
	got, err := ParseToken(tok.String())
	if err != nil {
		t.Fatal(err)
	}
	if got != tok || got.CAHash != ca.Hash() {
		t.Fatalf("round trip %+v, want %+v", got, tok)
	}
	if !got.CheckSecret(tok.Secret) || got.CheckSecret(tok.Secret+"x") {
		t.Fatal("CheckSecret does not tell the secret from another")
	}
	for _, bad := range []string{"", "K10::x", "K10" + strings.Repeat("z", 64) + "::x", "X10" + ca.Hash() + "::x", "K10" + ca.Hash() + "::"} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) succeeded", bad)
		}
	}
}
