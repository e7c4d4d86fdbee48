package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fleetplane/fleetplane/agent/apply"
)

// Files of the identity in the data directory.
const (
	keyFile      = "device.key"
	identityFile = "identity.json"
	certFile     = "device.crt"
	caFile       = "ca.crt"
)

// identity is the device's key, name and, once enrolled, its certificate. With an empty dir
// it is kept in memory only.
type identity struct {
	dir       string
	name      string
	key       *ecdsa.PrivateKey
	keySHA256 string
	submitted bool
	certPEM   []byte
	caPEM     []byte
}

// identityRecord is the JSON form of identity.json.
type identityRecord struct {
	Name      string `json:"name"`
	Submitted bool   `json:"enrollment_submitted,omitempty"`
}

// loadIdentity reads the identity kept in dir, creating the key and name on first use. A
// non-empty name must match the stored one.
func loadIdentity(dir, name string) (*identity, error) {
	id := &identity{dir: dir}
	if err := id.loadKey(); err != nil {
		return nil, err
	}
	var rec identityRecord
	if err := id.readJSON(identityFile, &rec); err != nil {
		return nil, err
	}
	if name != "" && rec.Name != "" && name != rec.Name {
		return nil, fmt.Errorf("device name %q differs from %q stored in %s: "+
			"drop --name or use a new data directory", name, rec.Name, dir)
	}

	id.submitted = rec.Submitted
	id.name = rec.Name
	if id.name == "" {
		id.name = name
	}
	if id.name == "" {
		id.name = "dev-" + id.keySHA256[:16]
	}
	if rec.Name == "" {
		if err := id.saveRecord(); err != nil {
			return nil, err
		}
	}

	var err error
	if id.certPEM, err = id.readFile(certFile); err != nil {
		return nil, err
	}
	if id.caPEM, err = id.readFile(caFile); err != nil {
		return nil, err
	}
	return id, nil
}

func (id *identity) loadKey() error {
	data, err := id.readFile(keyFile)
	if err != nil {
		return err
	}
	if data == nil {
		if id.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return fmt.Errorf("generate device key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(id.key)
		if err != nil {
			return fmt.Errorf("encode device key: %w", err)
		}
		if err := id.writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return err
		}
	} else {
		block, _ := pem.Decode(data)
		if block == nil {
			return fmt.Errorf("device key %s is not PEM: remove it to enroll again", id.path(keyFile))
		}
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return fmt.Errorf("parse device key %s: %w", id.path(keyFile), err)
		}
		key, ok := parsed.(*ecdsa.PrivateKey)
		if !ok {
			return fmt.Errorf("device key %s is not an ECDSA key", id.path(keyFile))
		}
		id.key = key
	}
	sum, err := publicKeySHA256(&id.key.PublicKey)
	if err != nil {
		return err
	}
	id.keySHA256 = sum
	return nil
}

// publicKeySHA256 returns the hex SHA-256 of the DER (PKIX) form of a public key.
func publicKeySHA256(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// csrPEM returns a PEM certificate signing request whose common name is the device name.
func (id *identity) csrPEM() (string, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: id.name}}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, id.key)
	if err != nil {
		return "", fmt.Errorf("create CSR: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func (id *identity) markSubmitted(submitted bool) error {
	if id.submitted == submitted {
		return nil
	}
	id.submitted = submitted
	return id.saveRecord()
}

// storeCertificate checks that certPEM certifies the device's key and saves it with the CA.
func (id *identity) storeCertificate(certPEM, caPEM []byte) error {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return errors.New("enrollment certificate is not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse enrollment certificate: %w", err)
	}
	sum, err := publicKeySHA256(cert.PublicKey)
	if err != nil {
		return err
	}
	if sum != id.keySHA256 {
		return errors.New("enrollment certificate is for another key")
	}
	if err := id.writeFile(certFile, certPEM, 0o644); err != nil {
		return err
	}
	if len(caPEM) > 0 {
		if err := id.writeFile(caFile, caPEM, 0o644); err != nil {
			return err
		}
	}
	id.certPEM, id.caPEM = certPEM, caPEM
	return nil
}

func (id *identity) enrolled() bool {
	return len(id.certPEM) > 0
}

// tlsCertificate returns the client certificate for mutual TLS.
func (id *identity) tlsCertificate() (tls.Certificate, error) {
	block, _ := pem.Decode(id.certPEM)
	if block == nil {
		return tls.Certificate{}, fmt.Errorf("device certificate %s is not PEM", id.path(certFile))
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse device certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: id.key, Leaf: leaf}, nil
}

func (id *identity) saveRecord() error {
	data, err := json.Marshal(identityRecord{Name: id.name, Submitted: id.submitted})
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	return id.writeFile(identityFile, data, 0o600)
}

func (id *identity) path(name string) string {
	return filepath.Join(id.dir, name)
}

// readFile returns the content of a data directory file, or nil when it does not exist or the
// identity is kept in memory.
func (id *identity) readFile(name string) ([]byte, error) {
	if id.dir == "" {
		return nil, nil
	}
	data, err := os.ReadFile(id.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	return data, nil
}

func (id *identity) readJSON(name string, v any) error {
	data, err := id.readFile(name)
	if err != nil || data == nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parse %s: %w", id.path(name), err)
	}
	return nil
}

func (id *identity) writeFile(name string, data []byte, mode fs.FileMode) error {
	if id.dir == "" {
		return nil
	}
	if err := os.MkdirAll(id.dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	return apply.WriteFileAtomic(id.path(name), data, mode)
}
