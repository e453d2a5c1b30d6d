// Package pki is the control plane's certificate authority: it signs the
// API servers' serving certificates and the agents' client certificates,
// and checks the join tokens that let a new agent get one.
//
// It is deliberately small, on the model of kubeadm and k3s: one
// self-signed ECDSA P-256 CA per cluster, made on first start and shared by
// every server replica; certificates signed from CSRs with the standard
// library; no intermediate CAs, no rotation beyond long validity.
// Revocation is the agent link's: it accepts an agent certificate only if
// the store records its serial number for the host (package hostlink). An agent's identity is its certificate's common name (the
// host name) with organization Agents; the servers' own client
// certificate (for calling the agents' host API) has organization Servers.
// Anything larger (an external CA, SPIFFE) belongs behind this same small
// surface.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/atomicfile"
)

// Organizations of the certificates the CA signs: they say what the holder
// is, the common name says who.
const (
	Agents  = "kanga:agents"
	Servers = "kanga:servers"
)

// Validity of the certificates. Long, since there is no rotation yet.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 2 * 365 * 24 * time.Hour
)

// CA is a certificate authority: its certificate and, on servers, its key.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA makes a self-signed CA.
func NewCA(name string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// LoadCA parses a CA's certificate and key.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("CA key: no PEM block")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

// Pool returns a cert pool holding just the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Hash is the SHA-256 of the CA certificate (DER), hex: what a join token
// carries so that a joining agent can pin the CA on first contact.
func (ca *CA) Hash() string { return CertHash(ca.Cert) }

// CertHash returns the hex SHA-256 of a certificate's DER.
func CertHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// ServingCert issues a TLS serving certificate for the given DNS names and
// IPs (also usable as a client certificate, CN=name, O=org: the server
// replicas call the agents' host API with it).
func (ca *CA) ServingCert(name, org string, hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := ca.leafTemplate(name, org)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// SignAgentCSR signs an agent's CSR as a client and serving certificate
// for host name: CN=name, O=Agents, whatever the CSR asks for, so that a
// joining agent can never choose its own privileges. SANs are the CSR's
// (the agent's host API is served with the same certificate).
func (ca *CA) SignAgentCSR(csrPEM []byte, name string) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("csr is not a PEM certificate request: %w", errdefs.ErrInvalidArgument)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	tmpl := ca.leafTemplate(name, Agents)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	tmpl.DNSNames = csr.DNSNames
	tmpl.IPAddresses = csr.IPAddresses
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func (ca *CA) leafTemplate(cn, org string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{org}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

// NewCSR makes a key and a CSR for an agent, with SANs for its host API.
func NewCSR(name string, hosts []string) (csrPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: name, Organization: []string{Agents}}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}

// ParseCert parses the first PEM certificate.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// Identity names the holder of a verified peer certificate.
type Identity struct {
	Name string // common name: the host name for agents
	Org  string // Agents or Servers
	// Serial is the certificate's serial number in hex: the agent link
	// accepts only the serials recorded for the host (revocation).
	Serial string
}

// PeerIdentity returns who the client of a TLS connection is, from a
// certificate the TLS stack verified against the CA; ErrUnauthenticated if
// it sent none.
func PeerIdentity(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, fmt.Errorf("no client certificate signed by the cluster CA: join with kanga agent --join URL --token TOKEN: %w", errdefs.ErrUnauthenticated)
	}
	c := cs.VerifiedChains[0][0]
	id := Identity{Name: c.Subject.CommonName, Serial: c.SerialNumber.Text(16)}
	if len(c.Subject.Organization) == 1 {
		id.Org = c.Subject.Organization[0]
	}
	return id, nil
}

// Token is a join token, k3s style: K10<CA hash>::<secret>. The hash lets
// the agent pin the CA before it trusts anything the server says; the
// secret proves to the server that the agent was given the token.
type Token struct {
	CAHash string
	Secret string
}

const tokenPrefix = "K10"

// NewToken returns a token for ca with a fresh secret.
func NewToken(ca *CA) Token {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return Token{CAHash: ca.Hash(), Secret: hex.EncodeToString(b)}
}

func (t Token) String() string { return tokenPrefix + t.CAHash + "::" + t.Secret }

// ParseToken parses a join token.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	hash, secret, ok2 := strings.Cut(rest, "::")
	if !ok || !ok2 || len(hash) != 64 || secret == "" {
		return Token{}, fmt.Errorf("join token is not of the form K10<sha256 of the CA>::<secret>: copy it from the server's data dir (join-token): %w", errdefs.ErrInvalidArgument)
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return Token{}, fmt.Errorf("join token's CA hash is not hex: %w", errdefs.ErrInvalidArgument)
	}
	return Token{CAHash: hash, Secret: secret}, nil
}

// CheckSecret compares a presented secret with the expected one in
// constant time.
func (t Token) CheckSecret(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) == 1
}

// WriteFile writes data with mode 0600, atomically and durably: a host
// that crashes right after joining keeps its key and certificate whole.
func WriteFile(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o600)
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
