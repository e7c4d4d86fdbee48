package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
)

func dialGRPC(t *testing.T, ts *testServer) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestProtocolsInterop writes with one protocol and reads with the others.
func TestProtocolsInterop(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	grpcClient := fleetplanev1.NewDeviceServiceClient(dialGRPC(t, ts))

	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			client := fleetplanev1connect.NewDeviceServiceClient(p.client(), ts.url, p.opts...)
			name := "dev-" + p.name

			created, err := client.CreateDevice(ctx, connect.NewRequest(
				&fleetplanev1.CreateDeviceRequest{Device: newDevice(name, map[string]string{"p": p.name})}))
			if err != nil {
				t.Fatalf("CreateDevice: %v", err)
			}
			got, err := grpcClient.GetDevice(ctx, &fleetplanev1.GetDeviceRequest{Name: name})
			if err != nil {
				t.Fatalf("grpc-go GetDevice: %v", err)
			}
			if diff := cmp.Diff(created.Msg.GetDevice(), got.GetDevice(), protocmp.Transform()); diff != "" {
				t.Errorf("grpc-go read differs from create (-created +got):\n%s", diff)
			}

			upd := got.GetDevice()
			upd.Spec.Os.Image = "os:2"
			updated, err := grpcClient.UpdateDevice(ctx, &fleetplanev1.UpdateDeviceRequest{Device: upd})
			if err != nil {
				t.Fatalf("grpc-go UpdateDevice: %v", err)
			}
			if updated.GetDevice().GetMetadata().GetGeneration() != 2 {
				t.Errorf("generation = %d, want 2", updated.GetDevice().GetMetadata().GetGeneration())
			}

			list, err := client.ListDevices(ctx, connect.NewRequest(&fleetplanev1.ListDevicesRequest{
				Options: &fleetplanev1.ListOptions{LabelSelector: "p=" + p.name}}))
			if err != nil {
				t.Fatalf("ListDevices: %v", err)
			}
			if n := len(list.Msg.GetDevices()); n != 1 {
				t.Fatalf("listed %d devices, want 1", n)
			}
			if img := list.Msg.GetDevices()[0].GetSpec().GetOs().GetImage(); img != "os:2" {
				t.Errorf("listed image = %q, want os:2", img)
			}
			if list.Msg.GetResourceVersion() == "" {
				t.Error("list resource_version is empty")
			}

			if _, err := client.DeleteDevice(ctx, connect.NewRequest(
				&fleetplanev1.DeleteDeviceRequest{Name: name})); err != nil {
				t.Fatalf("DeleteDevice: %v", err)
			}
			_, err = grpcClient.GetDevice(ctx, &fleetplanev1.GetDeviceRequest{Name: name})
			if status.Code(err) != codes.NotFound {
				t.Errorf("grpc-go GetDevice after delete: %v, want NotFound", err)
			}
		})
	}
}

func TestGRPCClientCreate(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	grpcClient := fleetplanev1.NewDeviceServiceClient(dialGRPC(t, ts))

	_, err := grpcClient.CreateDevice(ctx, &fleetplanev1.CreateDeviceRequest{Device: newDevice("g1", nil)})
	if err != nil {
		t.Fatalf("grpc-go CreateDevice: %v", err)
	}
	got, err := ts.devices(connect.WithGRPCWeb()).GetDevice(ctx,
		connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: "g1"}))
	if err != nil {
		t.Fatalf("gRPC-Web GetDevice: %v", err)
	}
	if got.Msg.GetDevice().GetKind() != "Device" {
		t.Errorf("kind = %q, want Device", got.Msg.GetDevice().GetKind())
	}
	_, err = grpcClient.CreateDevice(ctx, &fleetplanev1.CreateDeviceRequest{Device: newDevice("g1", nil)})
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
	_, err = grpcClient.CreateDevice(ctx, &fleetplanev1.CreateDeviceRequest{Device: newDevice("Bad_Name", nil)})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad name: %v, want InvalidArgument", err)
	}
}

func TestHealthCheck(t *testing.T) {
	ts := startServer(t, nil)
	client := healthpb.NewHealthClient(dialGRPC(t, ts))
	for _, service := range []string{"", fleetplanev1connect.DeviceServiceName} {
		resp, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", service, resp.GetStatus())
		}
	}
}

func TestReflectionV1(t *testing.T) {
	ts := startServer(t, nil)
	stream, err := reflectionv1.NewServerReflectionClient(dialGRPC(t, ts)).
		ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	req := &reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}
	if err := stream.Send(req); err != nil {
		t.Fatalf("Send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if diff := cmp.Diff(serviceNames, names); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}

func TestReflectionV1Alpha(t *testing.T) {
	ts := startServer(t, nil)
	stream, err := reflectionv1alpha.NewServerReflectionClient(dialGRPC(t, ts)).
		ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	req := &reflectionv1alpha.ServerReflectionRequest{
		MessageRequest: &reflectionv1alpha.ServerReflectionRequest_FileContainingSymbol{
			FileContainingSymbol: fleetplanev1connect.FleetServiceName}}
	if err := stream.Send(req); err != nil {
		t.Fatalf("Send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if n := len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()); n == 0 {
		t.Errorf("no file descriptors for %s: %v", fleetplanev1connect.FleetServiceName, resp)
	}
}

// TestUpdateConcurrent sends two updates with the same resource version at once.
func TestUpdateConcurrent(t *testing.T) {
	ts := startServer(t, nil)
	d := createDevice(t, ts, newDevice("race", nil))
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			upd := cloneOf(d)
			upd.Metadata.Labels = map[string]string{"writer": string(rune('a' + i))}
			_, errs[i] = ts.devices(connect.WithGRPC()).UpdateDevice(ctx,
				connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: upd}))
		}()
	}
	wg.Wait()
	ok, aborted := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case connect.CodeOf(err) == connect.CodeAborted:
			aborted++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || aborted != 1 {
		t.Errorf("got %d successes and %d ABORTED, want 1 and 1", ok, aborted)
	}
}

func TestUpdateStale(t *testing.T) {
	ts := startServer(t, nil)
	d := createDevice(t, ts, newDevice("stale", nil))
	ctx := context.Background()
	first := cloneOf(d)
	first.Metadata.Labels = map[string]string{"a": "1"}
	if _, err := ts.devices().UpdateDevice(ctx, connect.NewRequest(
		&fleetplanev1.UpdateDeviceRequest{Device: first})); err != nil {
		t.Fatalf("first update: %v", err)
	}

	_, err := ts.devices().UpdateDevice(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: d}))
	wantCode(t, err, connect.CodeAborted)
	if msg := err.(*connect.Error).Message(); msg != msgConflict {
		t.Errorf("message = %q, want %q", msg, msgConflict)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	ts := startServer(t, nil)
	createDevice(t, ts, newDevice("m1", nil))

	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
	if !strings.Contains(string(body), "rpc_server_duration_milliseconds_bucket") {
		t.Errorf("metrics lack rpc_server_duration:\n%s", body)
	}
	if !strings.Contains(string(body), `rpc_method="CreateDevice"`) {
		t.Errorf("metrics lack the CreateDevice method:\n%s", body)
	}
}

func TestGRPCClientWatch(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := fleetplanev1.NewFleetServiceClient(dialGRPC(t, ts))
	stream, err := client.WatchFleets(ctx, &fleetplanev1.WatchFleetsRequest{})
	if err != nil {
		t.Fatalf("WatchFleets: %v", err)
	}
	// The response headers arrive once the server has set up the watch.
	if _, err := stream.Header(); err != nil {
		t.Fatalf("watch headers: %v", err)
	}

	_, err = client.CreateFleet(ctx, &fleetplanev1.CreateFleetRequest{Fleet: fleetWithTemplate(nil)})
	if err != nil {
		t.Fatalf("CreateFleet: %v", err)
	}
	ev, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if ev.GetType() != fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_ADDED ||
		ev.GetFleet().GetMetadata().GetName() != "f1" {
		t.Errorf("event = %v %q, want ADDED f1", ev.GetType(), ev.GetFleet().GetMetadata().GetName())
	}
}

// BenchmarkCreateGetDevice measures one CreateDevice and one GetDevice over the Connect
// protocol on loopback, with the SQLite store in a temporary directory.
func BenchmarkCreateGetDevice(b *testing.B) {
	ts := startServer(b, nil)
	ctx := context.Background()
	client := ts.devices()
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("bench-%d", i)
		i++
		_, err := client.CreateDevice(ctx, connect.NewRequest(
			&fleetplanev1.CreateDeviceRequest{Device: newDevice(name, nil)}))
		if err != nil {
			b.Fatalf("CreateDevice: %v", err)
		}
		_, err = client.GetDevice(ctx, connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: name}))
		if err != nil {
			b.Fatalf("GetDevice: %v", err)
		}
	}
}
