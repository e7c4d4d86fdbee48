package identity

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// DefaultHosts are the names that the server certificate covers when none are given.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// ServerTLSConfig returns the agent port's TLS configuration. Its server certificate is signed
// by the CA for hosts (DefaultHosts when empty) and kept in the CA directory. The certificate
// on disk is reused unless its hosts differ, it was signed by another CA, or it expires within
// 30 days. A running server also reissues it when it nears expiry. Clients may present a
// certificate, which must then chain to the CA; a handshake with any other certificate fails.
func (ca *CA) ServerTLSConfig(hosts []string) (*tls.Config, error) {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	hosts = slices.Clone(hosts)
	for _, h := range hosts {
		if h == "" {
			return nil, errors.New("server TLS config: a host name is empty; remove it")
		}
	}
	current, err := ca.serverCertificate(hosts)
	if err != nil {
		return nil, fmt.Errorf("server TLS config: %w", err)
	}
	server := &serverCert{ca: ca, hosts: hosts, current: current}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      ca.Pool(),
		GetCertificate: server.get,
	}, nil
}

// serverCert hands out the server certificate and renews it when it nears expiry.
type serverCert struct {
	ca    *CA
	hosts []string

	current *tls.Certificate // guarded by ca.serverMu
}

func (s *serverCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.ca.serverMu.Lock()
	defer s.ca.serverMu.Unlock()
	if time.Until(s.current.Leaf.NotAfter) > serverRenewBefore {
		return s.current, nil
	}
	renewed, err := s.ca.issueServerCert(s.hosts)
	if err != nil {
		// Keep serving the old certificate until it expires; the next handshake retries.
		return s.current, nil
	}
	s.current = renewed
	return s.current, nil
}

// serverCertificate loads the stored server certificate when it still fits hosts, or issues a
// new one.
func (ca *CA) serverCertificate(hosts []string) (*tls.Certificate, error) {
	ca.serverMu.Lock()
	defer ca.serverMu.Unlock()
	cert, err := ca.loadServerCert()
	if err == nil && ca.serverCertUsable(cert.Leaf, hosts) {
		return cert, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return ca.issueServerCert(hosts)
}

func (ca *CA) loadServerCert() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(ca.serverDir, serverCertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(ca.serverDir, serverKeyFile))
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// A broken pair is replaced rather than reported: the server owns these files.
		return nil, fmt.Errorf("load server certificate: %w", fs.ErrNotExist)
	}
	return &cert, nil
}

// serverCertUsable reports whether leaf was signed by this CA, covers exactly hosts and is
// valid for longer than the renewal margin.
func (ca *CA) serverCertUsable(leaf *x509.Certificate, hosts []string) bool {
	if leaf == nil || leaf.CheckSignatureFrom(ca.cert) != nil {
		return false
	}
	if time.Until(leaf.NotAfter) <= serverRenewBefore {
		return false
	}
	dns, ips := splitHosts(hosts)
	return slices.Equal(leaf.DNSNames, dns) && slices.EqualFunc(leaf.IPAddresses, ips, net.IP.Equal)
}

// issueServerCert creates a key and a certificate for hosts and stores both.
func (ca *CA) issueServerCert(hosts []string) (*tls.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	dns, ips := splitHosts(hosts)
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		DNSNames:    dns,
		IPAddresses: ips,
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(serverValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := ca.sign(tmpl, &key.PublicKey)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// Write the key first: a crash in between leaves a pair that fails to load and is reissued.
	if err := writeFileAtomic(filepath.Join(ca.serverDir, serverKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(ca.serverDir, serverCertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load new server certificate: %w", err)
	}
	return &cert, nil
}

// splitHosts separates IP addresses from DNS names.
func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}
