package agent_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/agent"
	"github.com/fleetplane/fleetplane/agent/apply"
	"github.com/fleetplane/fleetplane/agent/simulate"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/server"
	"github.com/fleetplane/fleetplane/server/agentapi"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// These tests run the agent against the real agent port and operator API on a SQLite store.
// Only tests import the server; the agent binary does not.

const e2eTimeout = 20 * time.Second

var e2eTiming = agent.Timing{
	EnrollMinDelay: 10 * time.Millisecond, EnrollMaxDelay: 100 * time.Millisecond,
	ReconnectMinDelay: 10 * time.Millisecond, ReconnectMaxDelay: 200 * time.Millisecond,
}

// realServer is an agent port on TLS and an operator API on plain HTTP, both on 127.0.0.1.
type realServer struct {
	store       store.Store
	ca          *identity.CA
	agentPort   *agentapi.Service
	agentURL    string
	operatorURL string
}

func startRealServer(t testing.TB) *realServer {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "fleetplane.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := identity.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatalf("load CA: %v", err)
	}
	quiet := slog.New(slog.DiscardHandler)

	svc, err := agentapi.New(agentapi.Config{Store: st, CA: ca, Logger: quiet})
	if err != nil {
		t.Fatalf("agentapi.New: %v", err)
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

	api, err := server.New(server.Config{Store: st, Signer: ca, Logger: quiet})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	operator := httptest.NewServer(api.Handler())
	t.Cleanup(operator.Close)

	return &realServer{
		store: st, ca: ca, agentPort: svc,
		agentURL: "https://" + ln.Addr().String(), operatorURL: operator.URL,
	}
}

// approve approves a pending enrollment request through the operator API.
func (s *realServer) approve(ctx context.Context, name string, labels map[string]string) error {
	client := fleetplanev1connect.NewEnrollmentRequestServiceClient(http.DefaultClient, s.operatorURL)
	_, err := client.ApproveEnrollmentRequest(ctx, connect.NewRequest(
		&fleetplanev1.ApproveEnrollmentRequestRequest{Name: name, Approved: true, Labels: labels}))
	return err
}

// render stores a rendered spec for device, notifies the device's stream and returns the
// rendered version.
func (s *realServer) render(t testing.TB, device string, spec *fleetplanev1.RenderedDeviceSpec) string {
	t.Helper()
	var version int64
	err := s.store.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		version, _, err = tx.PutRendered(ctx, device, spec)
		return err
	})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	s.agentPort.Notify(device)
	return formatInt(version)
}

func (s *realServer) device(t *testing.T, name string) *fleetplanev1.Device {
	t.Helper()
	var device *fleetplanev1.Device
	err := s.store.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, store.KindDevice, name)
		if err != nil {
			return err
		}
		device = obj.(*fleetplanev1.Device)
		return nil
	})
	if err != nil {
		t.Fatalf("get device %s: %v", name, err)
	}
	return device
}

func TestAgentAgainstAgentPort(t *testing.T) {
	s := startRealServer(t)
	data, root := t.TempDir(), t.TempDir()
	m, err := apply.Open(data, root, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Server: s.agentURL, CACertPEM: s.ca.CertPEM(), DataDir: data, Applier: m,
		Labels: map[string]string{"site": "lab"}, Logger: slog.New(slog.DiscardHandler),
		OnEnrollPending: s.approve, Timing: e2eTiming,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	poll(t, "the agent to connect", func() bool { return a.Snapshot().Connected })

	version := s.render(t, a.Name(), &fleetplanev1.RenderedDeviceSpec{
		Files:       []*fleetplanev1.RenderedFile{{Path: "/etc/app.conf", Content: []byte("a=1\n"), Mode: 0o600}},
		ContentHash: "e2e-1",
	})

	poll(t, "the spec to be applied", func() bool { return a.Snapshot().Version == version })
	if got, _ := os.ReadFile(filepath.Join(root, "etc/app.conf")); string(got) != "a=1\n" {
		t.Errorf("app.conf = %q, want a=1", got)
	}
	var d *fleetplanev1.Device
	poll(t, "the server to record the version", func() bool {
		d = s.device(t, a.Name())
		return d.GetStatus().GetConfig().GetRenderedVersion() == version
	})
	if got := d.GetMetadata().GetLabels()["site"]; got != "lab" {
		t.Errorf("device label site = %q, want lab", got)
	}
	poll(t, "the server to record the status report", func() bool {
		d = s.device(t, a.Name())
		return d.GetStatus().GetSystemInfo().GetAgentVersion() == agent.Version
	})
	if got := d.GetStatus().GetSummary().GetStatus(); got != "Online" {
		t.Errorf("device summary = %q, want Online", got)
	}
}

func TestSimulatorAgainstAgentPort(t *testing.T) {
	s := startRealServer(t)
	const count = 5
	sim, err := simulate.New(simulate.Options{
		Count: count, Server: s.agentURL, CACertPEM: s.ca.CertPEM(), ApproveURL: s.operatorURL,
		NamePrefix: "sim-", Timing: e2eTiming, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("simulate.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	poll(t, "every simulated agent to connect", func() bool { return sim.Progress().Connected == count })

	versions := map[string]string{}
	for _, name := range sim.Names() {
		versions[name] = s.render(t, name, &fleetplanev1.RenderedDeviceSpec{ContentHash: "sim-" + name})
	}

	poll(t, "every simulated agent to apply its spec", func() bool {
		return sim.Progress().Versions["1"] == count
	})
	for name, version := range versions {
		if version != "1" {
			t.Errorf("device %s got rendered version %s, want 1", name, version)
		}
	}
}

func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	pollFor(t, what, e2eTimeout, cond)
}

func pollFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func formatInt(n int64) string {
	return strconv.FormatInt(n, 10)
}

// BenchmarkSimulatorAgainstAgentPort enrolls b.N simulated agents through the real agent port
// and operator API, renders a spec for each and waits until all run it. It reports the heap in
// use per agent, server included, since both run in this process.
func BenchmarkSimulatorAgainstAgentPort(b *testing.B) {
	s := startRealServer(b)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()

	sim, err := simulate.New(simulate.Options{
		Count: b.N, Server: s.agentURL, CACertPEM: s.ca.CertPEM(), ApproveURL: s.operatorURL,
		Logger: slog.New(slog.DiscardHandler),
		Timing: agent.Timing{EnrollMinDelay: 200 * time.Millisecond, EnrollMaxDelay: 2 * time.Second},
	})
	if err != nil {
		b.Fatalf("simulate.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	pollFor(b, "every agent to connect", 10*time.Minute, func() bool {
		return sim.Progress().Connected == b.N
	})
	for _, name := range sim.Names() {
		s.render(b, name, &fleetplanev1.RenderedDeviceSpec{ContentHash: name})
	}
	pollFor(b, "every agent to apply", 10*time.Minute, func() bool {
		return sim.Progress().Versions["1"] == b.N
	})

	b.StopTimer()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/float64(b.N), "heap-bytes/agent")
}
