package agentapi

import (
	"context"
	"fmt"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/store"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func TestStreamSendsLatestSpec(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("d1")
	v1 := e.render("d1", "one")
	a := e.connect("d1", "")
	a.expectSpec(v1)
	a.ack(v1)

	d := e.waitDevice("d1", "ack recorded", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetConfig().GetRenderedVersion() == v1
	})
	if got := d.GetStatus().GetUpdated().GetStatus(); got != updatedUpToDate {
		t.Errorf("updated status = %q, want UpToDate", got)
	}
	if got := e.svc.Connected(); got != 1 {
		t.Errorf("Connected = %d, want 1", got)
	}
}

func TestStreamSkipsVersionAgentHas(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("d1")
	v1 := e.render("d1", "one")
	a := e.connect("d1", v1)
	v2 := e.render("d1", "two")
	e.svc.Notify("d1")
	// Version 1 is not sent, so the first spec is version 2.
	a.expectSpec(v2)
}

func TestStreamRejectedNotResent(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("d1")
	for i := range 5 {
		e.render("d1", "old"+string(rune('a'+i)))
	}
	a := e.connect("d1", "5")
	v6 := e.render("d1", "six")
	e.svc.Notify("d1")
	a.expectSpec(v6)
	a.reject(v6, "unit app.service failed to start")

	d := e.waitDevice("d1", "reject recorded", func(d *fleetplanev1.Device) bool {
		return rejectedVersion(d.GetStatus()) == 6
	})
	if got := d.GetStatus().GetUpdated().GetStatus(); got != updatedOutOfDate {
		t.Errorf("updated status = %q, want OutOfDate", got)
	}
	cond := d.GetStatus().GetConditions()[0]
	if want := "version 6: unit app.service failed to start"; cond.GetMessage() != want {
		t.Errorf("SpecRejected message = %q, want %q", cond.GetMessage(), want)
	}

	// Neither a notification, a sweep nor a reconnect sends version 6 again.
	e.svc.Notify("d1")
	e.svc.sweepSessions(t.Context())
	a.close()
	a = e.connect("d1", "5")
	v7 := e.render("d1", "seven")
	e.svc.Notify("d1")
	a.expectSpec(v7)
	a.ack(v7)
	e.waitDevice("d1", "ack of 7 recorded", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetConfig().GetRenderedVersion() == v7
	})
	e.svc.Notify("d1")
	e.svc.sweepSessions(t.Context())
	v8 := e.render("d1", "eight")
	e.svc.Notify("d1")
	// Version 7 was sent once: the next spec is version 8.
	a.expectSpec(v8)
	if rejectedVersion(e.device("d1").GetStatus()) != 0 {
		t.Error("SpecRejected condition kept after a newer version was applied")
	}
}

func TestStreamStalledAgentGetsNewest(t *testing.T) {
	e := newEnv(t, nil)
	fast := []string{"fast-1", "fast-2"}
	agents := map[string]*testAgent{}
	for _, name := range fast {
		e.createDevice(name)
		e.render(name, "v1")
		agents[name] = e.connect(name, "")
		agents[name].expectSpec("1")
		agents[name].ack("1")
	}
	// The stalled agent neither reads its stream nor acknowledges. Its first spec is larger
	// than its 64 KiB HTTP/2 receive window, so the server's send of it can block until the
	// agent reads. The test checks that Notify, the sweep and the other agents never wait.
	e.createDevice("stalled")
	e.render("stalled", strings.Repeat("x", 1<<20))
	stalled := e.connectPaused(fleetplanev1connect.NewAgentServiceClient(
		e.smallWindowClient(e.deviceCert("stalled")), e.url), "")
	waitFor(t, "all streams registered", func() bool { return e.svc.Connected() == 3 })

	var latest string
	for i := range 10 {
		for _, name := range append(fast, "stalled") {
			latest = e.render(name, fmt.Sprintf("v%d", i+2))
			start := time.Now()
			e.svc.Notify(name)
			if took := time.Since(start); took > time.Second {
				t.Errorf("Notify(%s) took %v", name, took)
			}
		}
		e.svc.sweepSessions(t.Context())
		for _, name := range fast {
			start := time.Now()
			agents[name].expectSpec(latest)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("%s waited %v for version %s", name, took, latest)
			}
			agents[name].ack(latest)
		}
	}
	if latest != "11" {
		t.Fatalf("latest version = %s, want 11", latest)
	}

	stalled.startReceiving()
	stalled.expectSpec("1")
	stalled.ack("1")
	stalled.expectSpec("11")
}

func TestStreamSweepCatchesMissedNotify(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SweepInterval = 20 * time.Millisecond })
	e.createDevice("d1")
	a := e.connect("d1", "")
	waitFor(t, "stream registered", func() bool { return e.svc.Connected() == 1 })
	v1 := e.render("d1", "one")
	a.expectSpec(v1)
}

func TestStreamSecondReplacesFirst(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("d1")
	first := e.connect("d1", "")
	waitFor(t, "first stream registered", func() bool { return e.svc.Connected() == 1 })
	second := e.connect("d1", "")

	if err := first.expectEnd(); err.Code() != connect.CodeAborted {
		t.Errorf("first stream ended with %v, want ABORTED", err)
	}
	v1 := e.render("d1", "one")
	e.svc.Notify("d1")
	second.expectSpec(v1)
	if got := e.svc.Connected(); got != 1 {
		t.Errorf("Connected = %d, want 1", got)
	}
}

func TestStreamFirstMessageNotHello(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("d1")
	stream := e.agentClient(e.deviceCert("d1")).Stream(t.Context())
	defer stream.CloseResponse()
	err := stream.Send(&fleetplanev1.StreamRequest{Message: &fleetplanev1.StreamRequest_Ack{
		Ack: &fleetplanev1.SpecAck{RenderedVersion: "1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Receive()
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("Receive error = %v, want INVALID_ARGUMENT", err)
	}
}

func TestStreamUnknownDevice(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("d1", "")
	err := a.expectEnd()
	if err.Code() != connect.CodeNotFound {
		t.Fatalf("stream ended with %v, want NOT_FOUND", err)
	}
	if !strings.Contains(err.Message(), "device d1 is not registered") {
		t.Errorf("message %q does not say the device is not registered", err.Message())
	}
}

func TestStreamAdmissionLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AdmitRate, c.AdmitBurst = 0.001, 1 })
	e.createDevice("d1")
	e.createDevice("d2")
	e.connect("d1", "")
	waitFor(t, "first stream registered", func() bool { return e.svc.Connected() == 1 })
	err := e.connect("d2", "").expectEnd()
	if err.Code() != connect.CodeUnavailable {
		t.Errorf("second stream ended with %v, want UNAVAILABLE", err)
	}
}

func TestStreamIdleClosed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.KeepaliveInterval = 20 * time.Millisecond })
	e.createDevice("d1")
	a := e.connect("d1", "")
	sawKeepalive := false
	timeout := time.After(waitTimeout)
	for {
		select {
		case msg := <-a.received:
			sawKeepalive = sawKeepalive || msg.GetKeepalive() != nil
			continue
		case err := <-a.ended:
			if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
				t.Errorf("silent stream ended with %v, want DEADLINE_EXCEEDED", err)
			}
		case <-timeout:
			t.Fatal("silent stream was not closed")
		}
		break
	}
	if !sawKeepalive {
		t.Error("server sent no keepalive before closing the stream")
	}
}

func TestStatusReportMergesAgentFields(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("d1")
	v1 := e.render("d1", "one")
	a := e.connect("d1", "")
	a.expectSpec(v1)
	a.ack(v1)
	e.waitDevice("d1", "ack recorded", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetConfig().GetRenderedVersion() == v1
	})

	a.sendStatus(&fleetplanev1.DeviceStatus{
		Summary:    &fleetplanev1.DeviceSummaryStatus{Status: "Degraded", Info: "disk 91%"},
		Config:     &fleetplanev1.DeviceConfigStatus{RenderedVersion: "99"},
		SystemInfo: &fleetplanev1.DeviceSystemInfo{Hostname: "gw-1"},
		Conditions: []*fleetplanev1.Condition{
			{Type: "DiskPressure", Status: "True"},
			{Type: ConditionSpecRejected, Status: "True", Message: "version 1: forged"},
		},
	})
	d := e.waitDevice("d1", "status written", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetSummary().GetStatus() == "Degraded"
	})
	if got := d.GetStatus().GetSystemInfo().GetHostname(); got != "gw-1" {
		t.Errorf("hostname = %q, want gw-1", got)
	}
	if got := d.GetStatus().GetConfig().GetRenderedVersion(); got != v1 {
		t.Errorf("rendered version = %q, want %s from the ack", got, v1)
	}
	conds := d.GetStatus().GetConditions()
	if len(conds) != 1 || conds[0].GetType() != "DiskPressure" {
		t.Errorf("conditions = %v, want only DiskPressure", conds)
	}
}

func TestStatusStalledWriteDropsIntermediate(t *testing.T) {
	e := newEnv(t, nil)
	entered := make(chan struct{})
	release := make(chan struct{})
	var mu sync.Mutex
	writes := 0
	e.svc.beforeStatusWrite = func(string) {
		mu.Lock()
		writes++
		first := writes == 1
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
	}
	e.createDevice("d1")
	v1 := e.render("d1", "one")
	a := e.connect("d1", "")
	a.expectSpec(v1)

	summary := func(s string) *fleetplanev1.DeviceStatus {
		return &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: s}}
	}
	a.sendStatus(summary("first"))
	<-entered
	a.sendStatus(summary("second"))
	a.sendStatus(summary("third"))
	a.ack(v1)
	// The ack, sent after the later reports, is written while the first report's write stalls.
	e.waitDevice("d1", "ack recorded", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetConfig().GetRenderedVersion() == v1
	})
	close(release)

	e.waitDevice("d1", "third report written", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetSummary().GetStatus() == "third"
	})
	mu.Lock()
	defer mu.Unlock()
	if writes != 2 {
		t.Errorf("status writes = %d, want 2 (first and third)", writes)
	}
}

func TestLastSeenKeepsResourceVersion(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LastSeenFlush = 10 * time.Millisecond })
	e.createDevice("d1")
	before := e.device("d1").GetMetadata().GetResourceVersion()
	a := e.connect("d1", "")
	a.send(&fleetplanev1.StreamRequest{Message: &fleetplanev1.StreamRequest_Keepalive{
		Keepalive: &fleetplanev1.Keepalive{},
	}})
	d := e.waitDevice("d1", "last seen written", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetLastSeen() != nil
	})
	if got := d.GetMetadata().GetResourceVersion(); got != before {
		t.Errorf("resource version = %s after a last-seen flush, want %s", got, before)
	}
	if age := time.Since(d.GetStatus().GetLastSeen().AsTime()); age > time.Minute || age < 0 {
		t.Errorf("last seen is %v ago, want just now", age)
	}
}

func TestStreamDeletedDeviceClosed(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("d1")
	a := e.connect("d1", "")
	waitFor(t, "stream registered", func() bool { return e.svc.Connected() == 1 })
	e.inTx(func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Delete(ctx, store.KindDevice, "d1")
		return err
	})
	e.svc.sweepSessions(t.Context())
	err := a.expectEnd()
	if err.Code() != connect.CodeNotFound {
		t.Fatalf("stream of a deleted device ended with %v, want NOT_FOUND", err)
	}
	if !strings.Contains(err.Message(), "may have been deleted") {
		t.Errorf("message %q does not say the device may have been deleted", err.Message())
	}
}

func TestSessionRegistryFollowsStreams(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.LastSeenFlush = 10 * time.Millisecond
		c.SessionReplica = "r1"
		// A registry entry left by an earlier process under the same id, written before the
		// service starts.
		err := c.Store.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
			return tx.OpenSessions(ctx, "r1", []string{"stale"}, time.Now())
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	e.createDevice("d1")
	holders := func() map[string]string {
		var got map[string]string
		e.inTx(func(ctx context.Context, tx store.Tx) error {
			var err error
			got, err = tx.SessionHolders(ctx, []string{"d1", "stale"})
			return err
		})
		return got
	}

	a := e.connect("d1", "")
	waitFor(t, "the registry to name r1 as d1's holder and forget the stale entry", func() bool {
		got := holders()
		return len(got) == 1 && got["d1"] == "r1"
	})
	a.close()
	waitFor(t, "the registry to forget d1's closed stream", func() bool {
		return len(holders()) == 0
	})
}
