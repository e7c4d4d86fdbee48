package agentapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

// env is an agent port on a loopback TLS listener with a SQLite store in a temporary directory.
type env struct {
	t     testing.TB
	store store.Store
	ca    *identity.CA
	caDir string
	svc   *Service
	url   string
}

// newEnv starts an agent port. change, if not nil, adjusts the configuration first.
func newEnv(t testing.TB, change func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "fleetplane.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	caDir := filepath.Join(dir, "ca")
	ca, err := identity.LoadOrCreateCA(caDir)
	if err != nil {
		t.Fatalf("load CA: %v", err)
	}
	cfg := Config{
		Store: st, CA: ca, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		KeepaliveInterval: time.Minute, SweepInterval: time.Minute,
	}
	if change != nil {
		change(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tlsConfig, err := ca.ServerTLSConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsConfig)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: svc.Handler(), ErrorLog: log.New(io.Discard, "", 0)}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		svc.Run(ctx)
	}()
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-runDone
	})
	return &env{t: t, store: st, ca: ca, caDir: caDir, svc: svc, url: "https://" + ln.Addr().String()}
}

func (e *env) inTx(fn func(ctx context.Context, tx store.Tx) error) {
	e.t.Helper()
	if err := e.store.InTx(context.Background(), fn); err != nil {
		e.t.Fatalf("transaction: %v", err)
	}
}

func (e *env) createDevice(name string) {
	e.t.Helper()
	e.inTx(func(ctx context.Context, tx store.Tx) error {
		// NOTE: the spec is not empty because the SQLite store cannot update the status of an
		// object whose encoded spec is empty (it writes NULL into resources.spec).
		_, err := tx.Create(ctx, &fleetplanev1.Device{
			Metadata: &fleetplanev1.ObjectMeta{Name: name},
			Spec:     &fleetplanev1.DeviceSpec{Os: &fleetplanev1.DeviceOsSpec{Image: "os:1"}},
		})
		return err
	})
}

// render stores a new rendered spec for device and returns its version. It does not notify.
func (e *env) render(device, content string) string {
	e.t.Helper()
	var version int64
	e.inTx(func(ctx context.Context, tx store.Tx) error {
		var err error
		version, _, err = tx.PutRendered(ctx, device, &fleetplanev1.RenderedDeviceSpec{
			Files:       []*fleetplanev1.RenderedFile{{Path: "/etc/app.conf", Content: []byte(content)}},
			ContentHash: fmt.Sprintf("%x", sha256.Sum256([]byte(content))),
		})
		return err
	})
	return strconv.FormatInt(version, 10)
}

func (e *env) device(name string) *fleetplanev1.Device {
	e.t.Helper()
	var device *fleetplanev1.Device
	e.inTx(func(ctx context.Context, tx store.Tx) error {
		var err error
		device, err = getDevice(ctx, tx, name)
		return err
	})
	return device
}

// waitDevice polls device name until ok returns true.
func (e *env) waitDevice(name, what string, ok func(*fleetplanev1.Device) bool) *fleetplanev1.Device {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		d := e.device(name)
		if ok(d) {
			return d
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for device %s: %s; status is %v", name, what, d.GetStatus())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deviceCert returns a client certificate for name signed by the environment's CA.
func (e *env) deviceCert(name string) tls.Certificate {
	e.t.Helper()
	key, csr := newCSR(e.t, name)
	certPEM, err := e.ca.SignCSR(csr, name)
	if err != nil {
		e.t.Fatalf("SignCSR: %v", err)
	}
	block, _ := pem.Decode(certPEM)
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
}

func newCSR(t testing.TB, cn string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
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

// httpClient returns an HTTP/2 client that trusts the CA and presents certs.
func (e *env) httpClient(certs ...tls.Certificate) *http.Client {
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: e.ca.Pool(), Certificates: certs},
		ForceAttemptHTTP2: true,
	}
	e.t.Cleanup(transport.CloseIdleConnections)
	return &http.Client{Transport: transport}
}

// smallWindowClient is httpClient with 64 KiB HTTP/2 receive windows, so that a peer's sends
// stall soon after the client stops reading.
func (e *env) smallWindowClient(certs ...tls.Certificate) *http.Client {
	client := e.httpClient(certs...)
	client.Transport.(*http.Transport).HTTP2 = &http.HTTP2Config{
		MaxReceiveBufferPerStream:     64 << 10,
		MaxReceiveBufferPerConnection: 64 << 10,
	}
	return client
}

func (e *env) agentClient(certs ...tls.Certificate) fleetplanev1connect.AgentServiceClient {
	return fleetplanev1connect.NewAgentServiceClient(e.httpClient(certs...), e.url)
}

func (e *env) deviceClient(certs ...tls.Certificate) fleetplanev1connect.DeviceServiceClient {
	return fleetplanev1connect.NewDeviceServiceClient(e.httpClient(certs...), e.url)
}

// testAgent is a minimal agent: it opens a stream and lets the test drive it.
type testAgent struct {
	t        testing.TB
	stream   *connect.BidiStreamForClient[fleetplanev1.StreamRequest, fleetplanev1.StreamResponse]
	cancel   context.CancelFunc
	received chan *fleetplanev1.StreamResponse
	ended    chan error // capacity 1; the error that ended receiving
}

// connect opens a stream for device with a new certificate and sends hello with version.
func (e *env) connect(device, version string) *testAgent {
	e.t.Helper()
	return e.connectWith(e.agentClient(e.deviceCert(device)), version)
}

func (e *env) connectWith(client fleetplanev1connect.AgentServiceClient, version string) *testAgent {
	e.t.Helper()
	a := e.connectPaused(client, version)
	a.startReceiving()
	return a
}

// connectPaused opens a stream and sends hello but does not read from the stream until
// startReceiving is called, so HTTP/2 flow control holds up the server's sends.
func (e *env) connectPaused(client fleetplanev1connect.AgentServiceClient, version string) *testAgent {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &testAgent{
		t:        e.t,
		stream:   client.Stream(ctx),
		cancel:   cancel,
		received: make(chan *fleetplanev1.StreamResponse, 64),
		ended:    make(chan error, 1),
	}
	e.t.Cleanup(a.close)
	a.send(&fleetplanev1.StreamRequest{Message: &fleetplanev1.StreamRequest_Hello{
		Hello: &fleetplanev1.AgentHello{RenderedVersion: version, CapabilityVersion: 1, AgentVersion: "test"},
	}})
	return a
}

func (a *testAgent) startReceiving() {
	go a.receive()
}

func (a *testAgent) close() {
	a.cancel()
	a.stream.CloseRequest()
	a.stream.CloseResponse()
}

// receive forwards messages until the stream fails.
func (a *testAgent) receive() {
	for {
		msg, err := a.stream.Receive()
		if err != nil {
			a.ended <- err
			return
		}
		a.received <- msg
	}
}

func (a *testAgent) send(msg *fleetplanev1.StreamRequest) {
	a.t.Helper()
	if err := a.stream.Send(msg); err != nil && !errors.Is(err, io.EOF) {
		a.t.Fatalf("send: %v", err)
	}
}

func (a *testAgent) ack(version string) {
	a.t.Helper()
	a.send(&fleetplanev1.StreamRequest{Message: &fleetplanev1.StreamRequest_Ack{
		Ack: &fleetplanev1.SpecAck{RenderedVersion: version},
	}})
}

func (a *testAgent) reject(version, message string) {
	a.t.Helper()
	a.send(&fleetplanev1.StreamRequest{Message: &fleetplanev1.StreamRequest_Reject{
		Reject: &fleetplanev1.SpecReject{RenderedVersion: version, Error: message},
	}})
}

func (a *testAgent) sendStatus(status *fleetplanev1.DeviceStatus) {
	a.t.Helper()
	a.send(&fleetplanev1.StreamRequest{Message: &fleetplanev1.StreamRequest_Status{Status: status}})
}

// nextSpec returns the next spec the server sends, skipping keepalives.
func (a *testAgent) nextSpec() *fleetplanev1.RenderedDeviceSpec {
	a.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case msg := <-a.received:
			if spec := msg.GetSpec(); spec != nil {
				return spec
			}
		case err := <-a.ended:
			a.t.Fatalf("stream ended while waiting for a spec: %v", err)
		case <-timeout:
			a.t.Fatal("timed out waiting for a spec")
		}
	}
}

// expectSpec waits for the next spec and checks its version.
func (a *testAgent) expectSpec(version string) {
	a.t.Helper()
	if got := a.nextSpec().GetRenderedVersion(); got != version {
		a.t.Fatalf("next spec has version %s, want %s", got, version)
	}
}

// expectEnd waits for the stream to end and returns the error it ended with.
func (a *testAgent) expectEnd() *connect.Error {
	a.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case <-a.received:
		case err := <-a.ended:
			var connectErr *connect.Error
			if !errors.As(err, &connectErr) {
				a.t.Fatalf("stream ended with %v, want a Connect error", err)
			}
			return connectErr
		case <-timeout:
			a.t.Fatal("timed out waiting for the stream to end")
		}
	}
}

// waitFor polls cond until it returns true.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// testWriter sends log output to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
