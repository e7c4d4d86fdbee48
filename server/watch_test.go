package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// recvDevice waits for the next watch event.
func recvDevice(t *testing.T, stream *connect.ServerStreamForClient[fleetplanev1.WatchDevicesResponse]) *fleetplanev1.WatchDevicesResponse {
	t.Helper()
	if !stream.Receive() {
		t.Fatalf("watch ended: %v", stream.Err())
	}
	return stream.Msg()
}

func watchDevices(t *testing.T, ctx context.Context, ts *testServer, opts *fleetplanev1.WatchOptions) *connect.ServerStreamForClient[fleetplanev1.WatchDevicesResponse] {
	t.Helper()
	stream, err := ts.devices().WatchDevices(ctx,
		connect.NewRequest(&fleetplanev1.WatchDevicesRequest{Options: opts}))
	if err != nil {
		t.Fatalf("WatchDevices: %v", err)
	}
	t.Cleanup(func() { stream.Close() })
	return stream
}

func TestWatchLabelSelector(t *testing.T) {
	ts := startServer(t, nil)
	ts.srv.bookmarkInterval = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := watchDevices(t, ctx, ts, &fleetplanev1.WatchOptions{LabelSelector: "env=prod"})

	createDevice(t, ts, newDevice("dev-a", map[string]string{"env": "dev"}))
	b := createDevice(t, ts, newDevice("prod-b", map[string]string{"env": "prod"}))
	ev := recvDevice(t, stream)
	if ev.GetType() != fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_ADDED ||
		ev.GetDevice().GetMetadata().GetName() != "prod-b" {
		t.Fatalf("first event = %v %s, want ADDED prod-b", ev.GetType(), ev.GetDevice().GetMetadata().GetName())
	}
	if ev.GetResourceVersion() != b.GetMetadata().GetResourceVersion() {
		t.Errorf("event version = %s, want %s", ev.GetResourceVersion(), b.GetMetadata().GetResourceVersion())
	}

	b.Spec.Os.Image = "os:2"
	if _, err := ts.devices().UpdateDevice(ctx, connect.NewRequest(
		&fleetplanev1.UpdateDeviceRequest{Device: b})); err != nil {
		t.Fatalf("UpdateDevice: %v", err)
	}
	if ev := recvDevice(t, stream); ev.GetType() != fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_MODIFIED {
		t.Errorf("second event = %v, want MODIFIED", ev.GetType())
	}
	if _, err := ts.devices().DeleteDevice(ctx, connect.NewRequest(
		&fleetplanev1.DeleteDeviceRequest{Name: "prod-b"})); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if ev := recvDevice(t, stream); ev.GetType() != fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_DELETED {
		t.Errorf("third event = %v, want DELETED", ev.GetType())
	}
}

func TestWatchFromListVersion(t *testing.T) {
	ts := startServer(t, nil)
	ts.srv.bookmarkInterval = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	createDevice(t, ts, newDevice("before", nil))
	list, err := ts.devices().ListDevices(ctx, connect.NewRequest(&fleetplanev1.ListDevicesRequest{}))
	if err != nil {
		t.Fatalf("ListDevices: %v", err)
	}
	createDevice(t, ts, newDevice("after", nil))

	stream := watchDevices(t, ctx, ts, &fleetplanev1.WatchOptions{
		ResourceVersion: list.Msg.GetResourceVersion()})
	if ev := recvDevice(t, stream); ev.GetDevice().GetMetadata().GetName() != "after" {
		t.Errorf("first event is about %q, want after", ev.GetDevice().GetMetadata().GetName())
	}
}

func TestWatchBookmark(t *testing.T) {
	ts := startServer(t, nil)
	ts.srv.bookmarkInterval = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	created := createDevice(t, ts, newDevice("x", nil))

	stream := watchDevices(t, ctx, ts, nil)
	ev := recvDevice(t, stream)
	if ev.GetType() != fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK {
		t.Fatalf("event = %v, want BOOKMARK", ev.GetType())
	}
	if ev.GetDevice() != nil {
		t.Errorf("bookmark carries a device: %v", ev.GetDevice())
	}
	if ev.GetResourceVersion() < created.GetMetadata().GetResourceVersion() {
		t.Errorf("bookmark version %s is before the device's %s",
			ev.GetResourceVersion(), created.GetMetadata().GetResourceVersion())
	}
}

func TestWatchBadVersion(t *testing.T) {
	ts := startServer(t, nil)
	for _, rv := range []string{"abc", "-1", "999999"} {
		t.Run(rv, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := ts.devices().WatchDevices(ctx, connect.NewRequest(
				&fleetplanev1.WatchDevicesRequest{Options: &fleetplanev1.WatchOptions{ResourceVersion: rv}}))
			if err == nil {
				stream.Receive()
				err = stream.Err()
				stream.Close()
			}
			wantCode(t, err, connect.CodeInvalidArgument)
			if msg := err.(*connect.Error).Message(); !strings.Contains(msg, "options.resourceVersion") {
				t.Errorf("message %q does not name options.resourceVersion", msg)
			}
		})
	}
}

func TestWatchPrunedVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the change log past sqlite.MinChangesKept, which takes seconds")
	}
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := ts.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		for i := range sqlite.MinChangesKept + 10 {
			ev := &fleetplanev1.Event{Metadata: &fleetplanev1.ObjectMeta{Name: fmt.Sprintf("e%05d", i)}}
			if _, err := tx.Create(ctx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("fill the change log: %v", err)
	}
	pruned, err := ts.store.(*sqlite.Store).PruneChanges(ctx, 0)
	if err != nil || pruned == 0 {
		t.Fatalf("PruneChanges = %d, %v; want some entries pruned", pruned, err)
	}

	stream, err := ts.devices().WatchDevices(ctx, connect.NewRequest(
		&fleetplanev1.WatchDevicesRequest{Options: &fleetplanev1.WatchOptions{ResourceVersion: "1"}}))
	if err == nil {
		stream.Receive()
		err = stream.Err()
		stream.Close()
	}
	wantCode(t, err, connect.CodeOutOfRange)
	if msg := err.(*connect.Error).Message(); !strings.Contains(msg, "list again") {
		t.Errorf("message %q does not say to list again", msg)
	}
}

// TestWatchClientGone checks that the handler ends when the client cancels, by waiting for
// the watch to appear in the RPC duration metric, which is recorded when the handler returns.
func TestWatchClientGone(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	stream := watchDevices(t, ctx, ts, nil)
	cancel()
	stream.Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(ts.url + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `rpc_method="WatchDevices"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("watch handler did not end after the client canceled")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatchEventsOfWrites(t *testing.T) {
	ts := startServer(t, nil)
	ts.srv.bookmarkInterval = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := ts.events().WatchEvents(ctx, connect.NewRequest(&fleetplanev1.WatchEventsRequest{
		Options: &fleetplanev1.WatchOptions{FieldSelector: "reason=DeviceCreated"}}))
	if err != nil {
		t.Fatalf("WatchEvents: %v", err)
	}
	defer stream.Close()

	createDevice(t, ts, newDevice("evt", nil))
	if !stream.Receive() {
		t.Fatalf("watch ended: %v", stream.Err())
	}
	ev := stream.Msg().GetEvent()
	if ev.GetInvolvedObject().GetName() != "evt" || ev.GetActor() != anonymousActor {
		t.Errorf("event = %v, want DeviceCreated for evt by %s", ev, anonymousActor)
	}
}
