// Package join is how an agent becomes a host of the cluster, on both
// sides of the link: the agent's side joins once with a token to get its
// certificate (Join, Credentials); the control plane's side issues and
// revokes join tokens (Authority) and checks the token a join presents
// (CheckSecret). The PKI itself is package pki.
package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostlink"
	"github.com/kanga-run/kanga/internal/pki"
)

// Credentials are an agent's certificate and the cluster CA.
type Credentials struct {
	Cert tls.Certificate
	CA   *x509.Certificate
}

// Pool returns a cert pool with the cluster CA.
func (c *Credentials) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.CA)
	return p
}

// ClientTLS is the agent's configuration for calling the server.
func (c *Credentials) ClientTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.Cert}, RootCAs: c.Pool(), MinVersion: tls.VersionTLS12}
}

// Files of an agent's data dir.
const (
	CertFile = "agent.crt"
	keyFile  = "agent.key"
	caFile   = "ca.crt"
)

// Join returns the agent's credentials from dataDir, or, on first start,
// gets them from the server at serverURL with the join token: the server's
// certificate chain must contain the CA whose hash the token carries
// (nothing is trusted before that), then the token's secret buys a
// certificate for name, signed from a CSR whose key never leaves dataDir.
// sans are the names and IPs of the agent's host API. serverURL may list
// several replicas, comma-separated; they are tried in turn.
func Join(ctx context.Context, serverURL, token, dataDir, name string, sans []string) (*Credentials, error) {
	var err error
	for _, u := range hostlink.SplitURLs(serverURL) {
		var c *Credentials
		if c, err = join(ctx, u, token, dataDir, name, sans); err == nil || !errors.Is(err, errdefs.ErrUnavailable) {
			return c, err
		}
	}
	return nil, err
}

func join(ctx context.Context, serverURL, token, dataDir, name string, sans []string) (*Credentials, error) {
	if c, err := loadCredentials(dataDir, name); err == nil {
		return c, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	tok, err := pki.ParseToken(token)
	if err != nil {
		return nil, err
	}
	csr, keyPEM, err := pki.NewCSR(name, sans)
	if err != nil {
		return nil, err
	}
	var pinned *x509.Certificate
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The CA is not known yet: the connection is verified against the
		// CA the token pins, below, instead of the system roots.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, c := range cs.PeerCertificates {
				if c.IsCA && pki.CertHash(c) == tok.CAHash {
					pinned = c
				}
			}
			if pinned == nil || len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("the server's certificates do not include the CA the join token names (sha256 %s): wrong server or wrong token", tok.CAHash)
			}
			roots := x509.NewCertPool()
			roots.AddCert(pinned)
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots})
			return err
		},
	}
	body, _ := json.Marshal(hostlink.JoinRequest{Name: name, Secret: tok.Secret, CSR: csr})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, serverURL+hostlink.PathJoin, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("joining %s: %v: %w", serverURL, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("joining %s: %w", serverURL, hostlink.ReadError(resp))
	}
	var jr hostlink.JoinResponse
	if err := json.NewDecoder(resp.Body).Decode(&jr); err != nil {
		return nil, fmt.Errorf("joining %s: %w", serverURL, err)
	}
	if ca, err := pki.ParseCert(jr.CA); err != nil || pki.CertHash(ca) != tok.CAHash {
		return nil, fmt.Errorf("joining %s: the server answered with another CA than the token names", serverURL)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	for f, b := range map[string][]byte{keyFile: keyPEM, CertFile: jr.Cert, caFile: jr.CA} {
		if err := pki.WriteFile(filepath.Join(dataDir, f), b); err != nil {
			return nil, err
		}
	}
	return loadCredentials(dataDir, name)
}

func loadCredentials(dataDir, name string) (*Credentials, error) {
	caPEM, err := os.ReadFile(filepath.Join(dataDir, caFile))
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caFile, err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dataDir, CertFile), filepath.Join(dataDir, keyFile))
	if err != nil {
		return nil, err
	}
	if cert.Leaf.Subject.CommonName != name {
		return nil, fmt.Errorf("%s is host %q's certificate, not %q's: use another --data-dir or the same --host-name: %w",
			filepath.Join(dataDir, CertFile), cert.Leaf.Subject.CommonName, name, errdefs.ErrInvalidArgument)
	}
	return &Credentials{Cert: cert, CA: ca}, nil
}
