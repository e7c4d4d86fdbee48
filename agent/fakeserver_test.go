package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
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

// testTimeout bounds every wait in these tests.
const testTimeout = 15 * time.Second

// fakeServer is an AgentService on a real TLS listener on 127.0.0.1 with a test CA. It signs
// CSRs, decides enrollments by its approval setting and hands each stream to the test.
type fakeServer struct {
	t      *testing.T
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
	tlsCfg *tls.Config
	srv    *httptest.Server
	addr   string

	mu          sync.Mutex
	approval    string // stateApproved, stateDenied or statePending
	enrollCalls int
	certCalls   int
	enrolled    map[string]*fleetplanev1.EnrollRequest
	// refuse, when set, is returned by Stream before it reads anything.
	refuse error

	streams chan *fakeStream
}

// fakeStream is one stream as the server sees it.
type fakeStream struct {
	device string
	hello  *fleetplanev1.AgentHello
	recv   chan *fleetplanev1.StreamRequest
	stream *connect.BidiStream[fleetplanev1.StreamRequest, fleetplanev1.StreamResponse]
	end    chan error
}

type deviceKey struct{}

func newFakeServer(t *testing.T) *fakeServer {
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
	f := &fakeServer{
		t: t, caCert: caCert, caKey: caKey,
		caPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		approval: stateApproved,
		enrolled: map[string]*fleetplanev1.EnrollRequest{},
		streams:  make(chan *fakeStream, 16),
	}
	serverKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serverDER := f.sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &serverKey.PublicKey)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	f.tlsCfg = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}
	f.start("127.0.0.1:0")
	t.Cleanup(f.stop)
	return f
}

func (f *fakeServer) sign(t *testing.T, tmpl *x509.Certificate, pub any) []byte {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, pub, f.caKey)
	if err != nil {
		t.Error(err)
	}
	return der
}

// start serves on addr; restarting on the address of an earlier run keeps the agent's URL.
func (f *fakeServer) start(addr string) {
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
	f.srv, f.addr = srv, ln.Addr().String()
}

// stop closes every connection, which ends running streams, and shuts the server down.
func (f *fakeServer) stop() {
	f.srv.CloseClientConnections()
	f.srv.Close()
}

func (f *fakeServer) url() string { return "https://" + f.addr }

func (f *fakeServer) setApproval(state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.approval = state
}

func (f *fakeServer) setRefusal(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse = err
}

func (f *fakeServer) Enroll(
	_ context.Context,
	req *connect.Request[fleetplanev1.EnrollRequest],
) (*connect.Response[fleetplanev1.EnrollResponse], error) {
	block, _ := pem.Decode([]byte(req.Msg.GetCsr()))
	if block == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("csr: not PEM"))
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || csr.Subject.CommonName != req.Msg.GetName() {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("csr: bad common name"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrollCalls++
	f.enrolled[req.Msg.GetName()] = req.Msg
	return connect.NewResponse(&fleetplanev1.EnrollResponse{State: statePending}), nil
}

func (f *fakeServer) GetEnrollmentCertificate(
	_ context.Context,
	req *connect.Request[fleetplanev1.GetEnrollmentCertificateRequest],
) (*connect.Response[fleetplanev1.GetEnrollmentCertificateResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.certCalls++
	er, ok := f.enrolled[req.Msg.GetName()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such enrollment request"))
	}
	block, _ := pem.Decode([]byte(er.GetCsr()))
	csr, _ := x509.ParseCertificateRequest(block.Bytes)
	if sum, _ := publicKeySHA256(csr.PublicKey); sum != req.Msg.GetPublicKeySha256() {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such enrollment request"))
	}
	resp := &fleetplanev1.GetEnrollmentCertificateResponse{State: f.approval}
	if f.approval == stateApproved {
		der := f.sign(f.t, &x509.Certificate{
			Subject:     pkix.Name{CommonName: csr.Subject.CommonName},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, csr.PublicKey)
		resp.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		resp.CaCertificate = string(f.caPEM)
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeServer) Stream(
	ctx context.Context,
	stream *connect.BidiStream[fleetplanev1.StreamRequest, fleetplanev1.StreamResponse],
) error {
	device, _ := ctx.Value(deviceKey{}).(string)
	if device == "" {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("client certificate required"))
	}
	f.mu.Lock()
	refuse := f.refuse
	f.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("first message must be hello"))
	}
	s := &fakeStream{
		device: device, hello: first.GetHello(), stream: stream,
		recv: make(chan *fleetplanev1.StreamRequest, 64), end: make(chan error, 1),
	}
	go func() {
		defer close(s.recv)
		for {
			msg, err := stream.Receive()
			if err != nil {
				return
			}
			s.recv <- msg
		}
	}()
	f.streams <- s
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-s.end:
		return err
	}
}

// nextStream waits for the agent to open a stream.
func (f *fakeServer) nextStream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for a stream")
		return nil
	}
}

func (s *fakeStream) sendSpec(t *testing.T, spec *fleetplanev1.RenderedDeviceSpec) {
	t.Helper()
	err := s.stream.Send(&fleetplanev1.StreamResponse{
		Message: &fleetplanev1.StreamResponse_Spec{Spec: spec},
	})
	if err != nil {
		t.Fatalf("send spec %s: %v", spec.GetRenderedVersion(), err)
	}
}

// next returns the next message from the agent for which keep returns true, skipping others.
func (s *fakeStream) next(
	t *testing.T,
	keep func(*fleetplanev1.StreamRequest) bool,
) *fleetplanev1.StreamRequest {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case msg, ok := <-s.recv:
			if !ok {
				t.Fatal("stream closed while waiting for a message")
			}
			if keep(msg) {
				return msg
			}
		case <-deadline:
			t.Fatal("timed out waiting for a message from the agent")
		}
	}
}

func isAnswer(m *fleetplanev1.StreamRequest) bool { return m.GetAck() != nil || m.GetReject() != nil }
func isStatus(m *fleetplanev1.StreamRequest) bool { return m.GetStatus() != nil }
