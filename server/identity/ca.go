// Package identity is the server's certificate authority and the device identity that the agent
// port derives from verified client certificates.
//
// The CA key and certificate live in a data directory (ca.key with mode 0600, ca.crt) and are
// created on first start. Device certificates carry the device name as their subject common
// name and are valid for client authentication only. The agent port's server certificate is
// signed by the same CA and stored next to it (server.key, server.crt), or in the directory
// that WithServerCertDir names.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Files in the CA directory.
const (
	caKeyFile      = "ca.key"
	caCertFile     = "ca.crt"
	serverKeyFile  = "server.key"
	serverCertFile = "server.crt"
)

// Validity periods.
const (
	caValidity = 10 * 365 * 24 * time.Hour
	// DefaultClientValidity is how long a device certificate is valid unless
	// WithClientValidity sets another period.
	DefaultClientValidity = 365 * 24 * time.Hour
	serverValidity        = 365 * 24 * time.Hour
	// serverRenewBefore is how long before expiry the server certificate is reissued.
	serverRenewBefore = 30 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a device whose clock runs a little slow accepts a
	// new certificate at once.
	clockSkew = 5 * time.Minute
)

// CA is the server's certificate authority. It is safe for concurrent use.
type CA struct {
	dir            string
	serverDir      string // directory of the agent port's certificate and key
	key            *ecdsa.PrivateKey
	cert           *x509.Certificate
	certPEM        []byte
	clientValidity time.Duration

	// serverMu serializes issuing the server certificate.
	serverMu sync.Mutex
}

// Option configures LoadOrCreateCA.
type Option func(*CA)

// WithClientValidity sets how long the device certificates that SignCSR issues are valid.
func WithClientValidity(d time.Duration) Option {
	return func(ca *CA) { ca.clientValidity = d }
}

// WithServerCertDir keeps the agent port's certificate and key in dir instead of the CA's
// directory. Replicas that share the CA directory use it, because each one issues a server
// certificate for its own host names.
func WithServerCertDir(dir string) Option {
	return func(ca *CA) { ca.serverDir = dir }
}

// LoadOrCreateCA loads the CA kept in dir, creating dir, an ECDSA P-256 key and a self-signed
// certificate valid for ten years on first use.
func LoadOrCreateCA(dir string, opts ...Option) (*CA, error) {
	ca := &CA{dir: dir, clientValidity: DefaultClientValidity}
	for _, opt := range opts {
		opt(ca)
	}
	if ca.clientValidity <= 0 {
		return nil, fmt.Errorf("load CA: client validity %v must be positive", ca.clientValidity)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("load CA: create directory: %w", err)
	}
	if ca.serverDir == "" {
		ca.serverDir = dir
	} else if err := os.MkdirAll(ca.serverDir, 0o700); err != nil {
		return nil, fmt.Errorf("load CA: create server certificate directory: %w", err)
	}
	key, err := loadOrCreateKey(filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ca.key = key
	if err := ca.loadOrCreateCert(); err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	return ca, nil
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte {
	return append([]byte(nil), ca.certPEM...)
}

// Certificate returns the parsed CA certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate {
	return ca.cert
}

// Pool returns a certificate pool that contains only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

func (ca *CA) loadOrCreateCert() error {
	path := filepath.Join(ca.dir, caCertFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ca.createCert(path)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	cert, err := parseCertPEM(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !publicKeyMatches(cert.PublicKey, &ca.key.PublicKey) {
		return fmt.Errorf("%s does not match the key in %s; restore the pair from a backup",
			path, caKeyFile)
	}
	ca.cert, ca.certPEM = cert, data
	return nil
}

func (ca *CA) createCert(path string) error {
	now := time.Now()
	keyID, err := subjectKeyID(&ca.key.PublicKey)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Fleetplane CA", Organization: []string{"Fleetplane"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse new CA certificate: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	created, err := writeFileExclusive(path, data, 0o644)
	if err != nil {
		return err
	}
	if !created {
		// Another process created the certificate first; use that one.
		return ca.loadOrCreateCert()
	}
	ca.cert, ca.certPEM = cert, data
	return nil
}

// sign issues a certificate for pub from tmpl, filling in the serial, issuer and key IDs.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	tmpl.SerialNumber = randomSerial()
	tmpl.AuthorityKeyId = ca.cert.SubjectKeyId
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		// A certificate cannot outlive the CA that signed it.
		tmpl.NotAfter = ca.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

// PublicKeySHA256 returns the hex SHA-256 of the DER (PKIX) encoding of pub, the proof of
// ownership that GetEnrollmentCertificate expects.
func PublicKeySHA256(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

func randomSerial() *big.Int {
	// The serial has 128 random bits. rand.Int returns an error only for a non-positive max.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(fmt.Sprintf("identity: random serial: %v", err))
	}
	return n.Add(n, big.NewInt(1))
}

// subjectKeyID returns the SHA-1 of the DER public key, used as the key identifier.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	sum := sha1.Sum(der)
	return sum[:], nil
}

func publicKeyMatches(a crypto.PublicKey, b *ecdsa.PublicKey) bool {
	ak, ok := a.(*ecdsa.PublicKey)
	return ok && ak.Equal(b)
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}
