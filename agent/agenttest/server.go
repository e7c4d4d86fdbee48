// Package agenttest provides a fake agent port for tests of the agent and its commands: an
// AgentService on a real TLS listener on 127.0.0.1 and an approval-only operator API. It signs
// CSRs with a test CA made on the fly, decides enrollments by its approval setting, and hands
// each stream to the test, or serves streams by itself after SetAutoSpec.
package agenttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
)

// Timeout bounds every wait of the helpers in this package.
const Timeout = 15 * time.Second

// Enrollment request states.
const (
	Pending  = "Pending"
	Approved = "Approved"
	Denied   = "Denied"
)

// Server is the fake agent port. Its zero value is not usable; call New.
type Server struct {
	t      testing.TB
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	// CAPEM is the test CA certificate, which signs the server and device certificates.
	CAPEM  []byte
	tlsCfg *tls.Config
	srv    *httptest.Server
	// Addr is the listening address, 127.0.0.1:PORT.
	Addr string
	// ApproveURL is the base URL of a plain HTTP EnrollmentRequestService that only
	// implements ApproveEnrollmentRequest.
	ApproveURL string

	mu          sync.Mutex
	approval    string
	approved    map[string]bool
	enrollCalls int
	certCalls   int
	enrolled    map[string]*fleetplanev1.EnrollRequest
	streamErr   error
	autoSpec    *fleetplanev1.RenderedDeviceSpec
	acks        int

	streams chan *Stream
}

// Stream is the server side of one agent stream.
type Stream struct {
	Device string
	Hello  *fleetplanev1.AgentHello
	recv   chan *fleetplanev1.StreamRequest
	sends  chan sendRequest
	end    chan error
}

type deviceKey struct{}

// New starts a server on a free port of 127.0.0.1 that approves every enrollment request. It
// stops when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fleetplane test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	f := &Server{
		t: t, caCert: caCert, caKey: caKey,
		CAPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		approval: Approved,
		approved: map[string]bool{},
		enrolled: map[string]*fleetplanev1.EnrollRequest{},
		streams:  make(chan *Stream, 16),
	}

	f.tlsCfg = f.serverTLS()
	f.Start("127.0.0.1:0")
	t.Cleanup(f.Stop)
	f.startApprover()
	return f
}

func (f *Server) serverTLS() *tls.Config {
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	serverDER := f.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &serverKey.PublicKey)
	pool := x509.NewCertPool()
	pool.AddCert(f.caCert)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}
}

func (f *Server) sign(tmpl *x509.Certificate, pub any) []byte {
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, pub, f.caKey)
	if err != nil {
		f.t.Error(err)
	}
	return der
}

// Start serves on addr. Restarting on the address of an earlier run keeps the agents' URL.
func (f *Server) Start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		f.t.Fatalf("listen on %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(fleetplanev1connect.NewAgentServiceHandler(f))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			ctx = context.WithValue(ctx, deviceKey{}, r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		mux.ServeHTTP(w, r.WithContext(ctx))
	}))
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.TLS = f.tlsCfg.Clone()
	srv.StartTLS()
	f.srv, f.Addr = srv, ln.Addr().String()
}

// Stop closes every connection, which ends running streams, and shuts the server down.
func (f *Server) Stop() {
	f.srv.CloseClientConnections()
	f.srv.Close()
}

// URL returns the base URL of the agent port.
func (f *Server) URL() string { return "https://" + f.Addr }

// SetApproval sets the state of every enrollment request: Approved, Denied, or Pending until
// ApproveEnrollmentRequest approves it.
func (f *Server) SetApproval(state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.approval = state
}

// SetStreamError makes Stream fail with err before it reads anything; nil accepts streams again.
func (f *Server) SetStreamError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.streamErr = err
}

// SetAutoSpec makes the server serve streams itself instead of handing them to NextStream. It
// sends spec to each agent whose hello has an older version and counts the acknowledgements.
func (f *Server) SetAutoSpec(spec *fleetplanev1.RenderedDeviceSpec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.autoSpec = spec
}

// Counts returns how often Enroll and GetEnrollmentCertificate were called and how many
// acknowledgements the automatic streams received.
func (f *Server) Counts() (enrollCalls, certCalls, acks int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enrollCalls, f.certCalls, f.acks
}

// EnrollRequest returns the last enrollment request of a device, or nil.
func (f *Server) EnrollRequest(name string) *fleetplanev1.EnrollRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enrolled[name]
}

// Enroll stores the request after checking that the CSR names the device.
func (f *Server) Enroll(
	_ context.Context,
	req *connect.Request[fleetplanev1.EnrollRequest],
) (*connect.Response[fleetplanev1.EnrollResponse], error) {
	csr, err := parseCSR(req.Msg.GetCsr())
	if err != nil || csr.Subject.CommonName != req.Msg.GetName() {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("csr: invalid or wrong common name"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrollCalls++
	if old, ok := f.enrolled[req.Msg.GetName()]; ok && keySHA256(old.GetCsr()) != keySHA256(req.Msg.GetCsr()) {
		return nil, connect.NewError(connect.CodeAlreadyExists, errors.New("enrollment request exists for another key"))
	}
	f.enrolled[req.Msg.GetName()] = req.Msg
	return connect.NewResponse(&fleetplanev1.EnrollResponse{State: Pending}), nil
}

// GetEnrollmentCertificate returns the request's state and, once approved, a certificate.
func (f *Server) GetEnrollmentCertificate(
	_ context.Context,
	req *connect.Request[fleetplanev1.GetEnrollmentCertificateRequest],
) (*connect.Response[fleetplanev1.GetEnrollmentCertificateResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.certCalls++
	name := req.Msg.GetName()
	notFound := connect.NewError(connect.CodeNotFound, errors.New("no such enrollment request"))
	er, ok := f.enrolled[name]
	if !ok {
		return nil, notFound
	}
	csr, err := parseCSR(er.GetCsr())
	if err != nil {
		return nil, notFound
	}
	if keySHA256(er.GetCsr()) != req.Msg.GetPublicKeySha256() {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("public key does not match"))
	}
	state := f.approval
	if f.approved[name] {
		state = Approved
	}
	resp := &fleetplanev1.GetEnrollmentCertificateResponse{State: state}
	if state == Approved {
		cert := f.sign(&x509.Certificate{
			Subject:     pkix.Name{CommonName: name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, csr.PublicKey)
		resp.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}))
		resp.CaCertificate = string(f.CAPEM)
	}
	return connect.NewResponse(resp), nil
}

func parseCSR(csrPEM string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil {
		return nil, errors.New("not PEM")
	}
	return x509.ParseCertificateRequest(block.Bytes)
}

// keySHA256 returns the hex SHA-256 of the public key of a PEM CSR, or "" when it does not parse.
func keySHA256(csrPEM string) string {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return ""
	}
	der, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
