package server

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/server/tasks"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// testServer is a Server on a real SQLite file, served over HTTP on 127.0.0.1.
type testServer struct {
	srv   *Server
	store store.Store
	url   string
	addr  string
}

// startServer starts a server and stops it when the test ends. configure, if set, changes the
// Config and the Server before it serves.
func startServer(t testing.TB, configure func(*Config)) *testServer {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "fleetplane.db"),
		sqlite.Options{ChangeHook: tasks.Hook})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	cfg := Config{Store: st}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv.pollInterval = 50 * time.Millisecond

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	serveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return &testServer{srv: srv, store: st, url: "http://" + ln.Addr().String(),
		addr: ln.Addr().String()}
}

// h2cClient returns an HTTP client that speaks unencrypted HTTP/2, as gRPC needs.
func h2cClient() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &protocols}}
}

// protocols lists the client options of the three protocols, with the HTTP client each needs.
var protocols = []struct {
	name   string
	client func() *http.Client
	opts   []connect.ClientOption
}{
	{"connect", func() *http.Client { return http.DefaultClient }, nil},
	{"grpc", h2cClient, []connect.ClientOption{connect.WithGRPC()}},
	{"grpcweb", func() *http.Client { return http.DefaultClient },
		[]connect.ClientOption{connect.WithGRPCWeb()}},
}

func (ts *testServer) devices(opts ...connect.ClientOption) fleetplanev1connect.DeviceServiceClient {
	return fleetplanev1connect.NewDeviceServiceClient(http.DefaultClient, ts.url, opts...)
}

func (ts *testServer) fleets() fleetplanev1connect.FleetServiceClient {
	return fleetplanev1connect.NewFleetServiceClient(http.DefaultClient, ts.url)
}

func (ts *testServer) repositories() fleetplanev1connect.RepositoryServiceClient {
	return fleetplanev1connect.NewRepositoryServiceClient(http.DefaultClient, ts.url)
}

func (ts *testServer) enrollments() fleetplanev1connect.EnrollmentRequestServiceClient {
	return fleetplanev1connect.NewEnrollmentRequestServiceClient(http.DefaultClient, ts.url)
}

func (ts *testServer) events() fleetplanev1connect.EventServiceClient {
	return fleetplanev1connect.NewEventServiceClient(http.DefaultClient, ts.url)
}

// wantCode fails the test unless err has the Connect code want.
func wantCode(t *testing.T, err error, want connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if got := connect.CodeOf(err); got != want {
		t.Fatalf("got code %v (%v), want %v", got, err, want)
	}
}

func newDevice(name string, labels map[string]string) *fleetplanev1.Device {
	return &fleetplanev1.Device{
		Metadata: &fleetplanev1.ObjectMeta{Name: name, Labels: labels},
		Spec:     &fleetplanev1.DeviceSpec{Os: &fleetplanev1.DeviceOsSpec{Image: "os:1"}},
	}
}

func createDevice(t *testing.T, ts *testServer, d *fleetplanev1.Device) *fleetplanev1.Device {
	t.Helper()
	resp, err := ts.devices().CreateDevice(context.Background(),
		connect.NewRequest(&fleetplanev1.CreateDeviceRequest{Device: d}))
	if err != nil {
		t.Fatalf("CreateDevice %s: %v", d.GetMetadata().GetName(), err)
	}
	return resp.Msg.GetDevice()
}

func TestNewWithoutStore(t *testing.T) {
	_, err := New(Config{})
	if err == nil {
		t.Fatal("New without a store returned no error")
	}
}

func TestMountAfterHandlerPanics(t *testing.T) {
	ts := startServer(t, nil)
	ts.srv.Handler()
	defer func() {
		if recover() == nil {
			t.Error("Mount after Handler did not panic")
		}
	}()
	ts.srv.Mount("/extra", http.NotFoundHandler())
}

func TestMountServesExtraHandler(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	srv.Mount("/extra/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	resp, err := http.Get("http://" + ln.Addr().String() + "/extra/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("status = %d, want %d", resp.StatusCode, http.StatusTeapot)
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestListenAndServeStopsOnCancel(t *testing.T) {
	// The agent port gets a free port too, so that a server running on the default ports
	// does not make this test fail.
	addr, agentAddr := freeAddr(t), freeAddr(t)
	dir := filepath.Join(t.TempDir(), "data")
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts := Options{ListenAddr: addr, AgentListenAddr: agentAddr, DataDir: dir}
	go func() { done <- ListenAndServe(ctx, opts) }()

	client := fleetplanev1connect.NewDeviceServiceClient(http.DefaultClient, "http://"+addr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := client.ListDevices(ctx, connect.NewRequest(&fleetplanev1.ListDevicesRequest{}))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not answer: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("ListenAndServe returned early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// A second server on the same data directory refuses to start.
	second := Options{ListenAddr: freeAddr(t), AgentListenAddr: freeAddr(t), DataDir: dir}
	if err := ListenAndServe(ctx, second); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second ListenAndServe on %s = %v; want an error saying it is in use", dir, err)
	}

	stop()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe = %v, want nil", err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("data directory: %v", err)
	}
	if mode := info.Mode().Perm(); mode != 0o700 {
		t.Errorf("data directory mode = %o, want 700", mode)
	}
	if _, err := os.Stat(filepath.Join(dir, "fleetplane.db")); err != nil {
		t.Errorf("database file: %v", err)
	}
}

func TestListenAndServeNoDataDir(t *testing.T) {
	err := ListenAndServe(context.Background(), Options{ListenAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "DataDir") {
		t.Errorf("ListenAndServe without DataDir = %v, want an error naming DataDir", err)
	}
}

func TestPanicIsInternal(t *testing.T) {
	ts := startServer(t, func(cfg *Config) {
		cfg.Hooks.ValidateTemplate = func(*fleetplanev1.DeviceTemplate) []error { panic("boom") }
	})
	ctx := context.Background()
	_, err := ts.fleets().CreateFleet(ctx, connect.NewRequest(&fleetplanev1.CreateFleetRequest{
		Fleet: &fleetplanev1.Fleet{Metadata: &fleetplanev1.ObjectMeta{Name: "f"}}}))
	wantCode(t, err, connect.CodeInternal)
	if msg := err.(*connect.Error).Message(); msg != msgInternal {
		t.Errorf("message = %q, want %q", msg, msgInternal)
	}

	_, err = ts.devices().ListDevices(ctx, connect.NewRequest(&fleetplanev1.ListDevicesRequest{}))
	if err != nil {
		t.Errorf("ListDevices after a panic: %v", err)
	}
}

func TestListenAndServeRejectsReplicaOptions(t *testing.T) {
	tests := map[string]struct {
		opts Options
		want string
	}{
		"peer address without a database": {
			opts: Options{PeerListenAddr: "127.0.0.1:0"}, want: "set --database"},
		"replica id with a space": {
			opts: Options{ReplicaID: "r 1"}, want: `invalid replica id "r 1"`},
		"replica id with a slash": {
			opts: Options{ReplicaID: "r/1"}, want: `invalid replica id "r/1"`},
		"replica id too long": {
			opts: Options{ReplicaID: strings.Repeat("r", 64)}, want: "invalid replica id"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.opts.DataDir = t.TempDir()
			tc.opts.ListenAddr = "127.0.0.1:0"
			err := ListenAndServe(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ListenAndServe = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDataDirReplicaIDStable(t *testing.T) {
	dir := t.TempDir()
	first, err := dataDirReplicaID(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := dataDirReplicaID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if first != again || !replicaIDPattern.MatchString(first) {
		t.Errorf("replica ids %q then %q; want one valid id kept in the data directory", first, again)
	}
	if err := os.WriteFile(filepath.Join(dir, "replica-id"), []byte("bad id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dataDirReplicaID(dir); err == nil || !strings.Contains(err.Error(), "delete the file") {
		t.Errorf("invalid stored id: error = %v; want one saying to delete the file", err)
	}
}
