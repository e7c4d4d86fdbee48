package identity

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatalf("LoadOrCreateCA: %v", err)
	}
	return ca
}

// newCSR returns a new key and a PEM CSR with common name cn.
func newCSR(t *testing.T, cn string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// clientCert signs a client certificate for cn with ca, valid from notBefore to notAfter.
func clientCert(t *testing.T, ca *CA, cn string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestSignCSRMismatchedName(t *testing.T) {
	ca := newTestCA(t)
	_, csr := newCSR(t, "device-b")
	_, err := ca.SignCSR(csr, "device-a")
	if !errors.Is(err, ErrInvalidCSR) {
		t.Fatalf("SignCSR error = %v, want ErrInvalidCSR", err)
	}
	if !strings.Contains(err.Error(), `"device-b" must equal the device name "device-a"`) {
		t.Errorf("SignCSR error %q does not name both names", err)
	}
}

func TestSignCSRBadInput(t *testing.T) {
	ca := newTestCA(t)
	_, csr := newCSR(t, "device-a")
	tampered := []byte(strings.Replace(string(csr), "A", "B", 1))
	for name, tc := range map[string]struct {
		csr    []byte
		device string
	}{
		"empty":       {nil, "device-a"},
		"not pem":     {[]byte("hello"), "device-a"},
		"tampered":    {tampered, "device-a"},
		"bad name":    {csr, "Device_A"},
		"empty name":  {csr, ""},
		"wrong block": {[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "device-a"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ca.SignCSR(tc.csr, tc.device); !errors.Is(err, ErrInvalidCSR) {
				t.Errorf("SignCSR error = %v, want ErrInvalidCSR", err)
			}
		})
	}
}

func TestSignCSRIssuesClientCert(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir(), WithClientValidity(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	key, csr := newCSR(t, "device-a")
	certPEM, err := ca.SignCSR(csr, "device-a")
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "device-a" {
		t.Errorf("common name = %q, want device-a", cert.Subject.CommonName)
	}
	if !publicKeyMatches(cert.PublicKey, &key.PublicKey) {
		t.Error("certificate public key is not the CSR's")
	}
	if got := cert.NotAfter.Sub(cert.NotBefore); got != 48*time.Hour+clockSkew {
		t.Errorf("validity = %v, want 48h plus %v skew", got, clockSkew)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:     ca.Pool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Errorf("verify as client certificate: %v", err)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:     ca.Pool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err == nil {
		t.Error("device certificate verified as a server certificate")
	}
}

func TestLoadOrCreateCAPersists(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	second, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(first.CertPEM()) != string(second.CertPEM()) {
		t.Error("second load returned a different CA certificate")
	}
	if !first.key.Equal(second.key) {
		t.Error("second load returned a different CA key")
	}
	info, err := os.Stat(filepath.Join(dir, caKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("ca.key mode = %v, want 0600", mode)
	}
	cert := first.Certificate()
	if !cert.IsCA {
		t.Error("CA certificate is not marked as a CA")
	}
	if years := cert.NotAfter.Sub(cert.NotBefore).Hours() / 24 / 365; years < 9.99 {
		t.Errorf("CA validity = %.2f years, want 10", years)
	}
}

func TestLoadOrCreateCAMismatchedKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateCA(dir); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := LoadOrCreateCA(other); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(other, caCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, caCertFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadOrCreateCA(dir)
	if err == nil || !strings.Contains(err.Error(), "does not match the key") {
		t.Fatalf("LoadOrCreateCA error = %v, want a key mismatch", err)
	}
}

func TestServerTLSConfigReissue(t *testing.T) {
	ca := newTestCA(t)
	first := serverLeaf(t, ca, nil)
	same := serverLeaf(t, ca, nil)
	if first.SerialNumber.Cmp(same.SerialNumber) != 0 {
		t.Error("certificate reissued although the hosts did not change")
	}
	changed := serverLeaf(t, ca, []string{"agents.example.test", "127.0.0.1"})
	if changed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("certificate not reissued after the hosts changed")
	}
	if got := changed.DNSNames; len(got) != 1 || got[0] != "agents.example.test" {
		t.Errorf("DNS names = %v, want [agents.example.test]", got)
	}
}

func serverLeaf(t *testing.T, ca *CA, hosts []string) *x509.Certificate {
	t.Helper()
	cfg, err := ca.ServerTLSConfig(hosts)
	if err != nil {
		t.Fatalf("ServerTLSConfig: %v", err)
	}
	cert, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return cert.Leaf
}

// serveTLS serves handler with ca's server TLS configuration on a loopback port and returns
// the address.
func serveTLS(t *testing.T, ca *CA, handler http.Handler) string {
	t.Helper()
	cfg, err := ca.ServerTLSConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func deviceEcho() http.Handler {
	return WithDevice(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		device, ok := DeviceFromContext(r.Context())
		if !ok {
			device = "(none)"
		}
		io.WriteString(w, device)
	}))
}

// get fetches the root page over TLS with the client certificates given.
func get(t *testing.T, ca *CA, addr string, certs ...tls.Certificate) (string, error) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      ca.Pool(),
		Certificates: certs,
		ServerName:   "127.0.0.1",
	}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func TestHandshakeValidCert(t *testing.T) {
	ca := newTestCA(t)
	addr := serveTLS(t, ca, deviceEcho())
	now := time.Now()
	body, err := get(t, ca, addr, clientCert(t, ca, "device-a", now.Add(-time.Hour), now.Add(time.Hour)))
	if err != nil {
		t.Fatalf("request with a valid certificate: %v", err)
	}
	if body != "device-a" {
		t.Errorf("device = %q, want device-a", body)
	}
}

func TestHandshakeNoCert(t *testing.T) {
	ca := newTestCA(t)
	addr := serveTLS(t, ca, deviceEcho())
	body, err := get(t, ca, addr)
	if err != nil {
		t.Fatalf("request without a certificate: %v", err)
	}
	if body != "(none)" {
		t.Errorf("device = %q, want none", body)
	}
}

func TestHandshakeForeignCA(t *testing.T) {
	ca := newTestCA(t)
	foreign := newTestCA(t)
	addr := serveTLS(t, ca, deviceEcho())
	now := time.Now()
	cert := clientCert(t, foreign, "device-a", now.Add(-time.Hour), now.Add(time.Hour))
	err := handshakeError(t, ca, addr, cert)
	if err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("request with a foreign certificate: error = %v, want unknown certificate authority", err)
	}
}

func TestHandshakeExpiredCert(t *testing.T) {
	ca := newTestCA(t)
	addr := serveTLS(t, ca, deviceEcho())
	now := time.Now()
	cert := clientCert(t, ca, "device-a", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	err := handshakeError(t, ca, addr, cert)
	if err == nil || !strings.Contains(err.Error(), "expired certificate") {
		t.Fatalf("request with an expired certificate: error = %v, want expired certificate", err)
	}
}

func TestRequireDeviceNoCert(t *testing.T) {
	ca := newTestCA(t)
	addr := serveTLS(t, ca, RequireDevice(http.NotFoundHandler()))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool(), ServerName: "127.0.0.1",
	}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status = %d, want 401", resp.StatusCode)
	}
}

func TestPublicKeySHA256(t *testing.T) {
	key, _ := newCSR(t, "device-a")
	a, err := PublicKeySHA256(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 64 {
		t.Errorf("hash %q has %d hex digits, want 64", a, len(a))
	}
	other, _ := newCSR(t, "device-a")
	b, err := PublicKeySHA256(&other.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Error("two keys have the same hash")
	}
}

// handshakeError connects with cert and returns the TLS error. With TLS 1.3 the server checks
// the client certificate after the client has finished its side of the handshake, so the
// server's alert arrives on the first read.
func handshakeError(t *testing.T, ca *CA, addr string, cert tls.Certificate) error {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}})
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	return err
}

func TestServerCertDirKeepsSharedCADirClean(t *testing.T) {
	shared := t.TempDir()
	own1, own2 := t.TempDir(), t.TempDir()
	ca1, err := LoadOrCreateCA(shared, WithServerCertDir(own1))
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadOrCreateCA(shared, WithServerCertDir(own2))
	if err != nil {
		t.Fatal(err)
	}
	leaf1 := serverLeaf(t, ca1, []string{"r1.example.test"})
	leaf2 := serverLeaf(t, ca2, []string{"r2.example.test"})

	// Each replica reloads its own certificate; neither overwrote the other's.
	again, err := LoadOrCreateCA(shared, WithServerCertDir(own1))
	if err != nil {
		t.Fatal(err)
	}
	if got := serverLeaf(t, again, []string{"r1.example.test"}); got.SerialNumber.Cmp(leaf1.SerialNumber) != 0 {
		t.Error("r1's server certificate was reissued after r2 started; want it kept")
	}
	if leaf2.DNSNames[0] != "r2.example.test" {
		t.Errorf("r2's certificate names %v", leaf2.DNSNames)
	}
	if _, err := os.Stat(filepath.Join(shared, serverCertFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("shared CA directory has %s (err %v); want server certificates elsewhere",
			serverCertFile, err)
	}
}
