package agentapi

import (
	"context"
	"net"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestTokenBucketLimitsRate(t *testing.T) {
	start := time.Unix(1000, 0)
	b := newTokenBucket(2, 3, start)
	for i := range 3 {
		if !b.allow(start) {
			t.Fatalf("call %d within the burst was rejected", i+1)
		}
	}
	if b.allow(start) {
		t.Error("call over the burst was admitted")
	}
	if !b.allow(start.Add(500 * time.Millisecond)) {
		t.Error("call after half a second at 2 per second was rejected")
	}
	if b.allow(start.Add(500 * time.Millisecond)) {
		t.Error("second call in the same instant was admitted")
	}
	if got := b.tokens; got > 3 {
		t.Errorf("tokens = %v, want at most the burst", got)
	}
}

func TestRejectedVersionParse(t *testing.T) {
	for message, want := range map[string]int64{
		"version 6: disk full": 6,
		"version 12: a: b":     12,
		"version x: disk full": 0,
		"something else":       0,
		"version 7":            7,
	} {
		status := &fleetplanev1.DeviceStatus{Conditions: []*fleetplanev1.Condition{{
			Type: ConditionSpecRejected, Status: "True", Message: message,
		}}}
		if got := rejectedVersion(status); got != want {
			t.Errorf("rejectedVersion(%q) = %d, want %d", message, got, want)
		}
	}
}

func TestMergeAgentStatusKeepsServerFields(t *testing.T) {
	rejected := &fleetplanev1.Condition{Type: ConditionSpecRejected, Status: "True", Message: "version 3: x"}
	status := &fleetplanev1.DeviceStatus{
		Updated:    &fleetplanev1.DeviceUpdatedStatus{Status: updatedOutOfDate},
		Config:     &fleetplanev1.DeviceConfigStatus{RenderedVersion: "2"},
		Conditions: []*fleetplanev1.Condition{rejected, {Type: "OldAgentCondition", Status: "True"}},
	}
	reported := &fleetplanev1.DeviceStatus{
		Summary:    &fleetplanev1.DeviceSummaryStatus{Status: "Online"},
		Updated:    &fleetplanev1.DeviceUpdatedStatus{Status: updatedUpToDate},
		Config:     &fleetplanev1.DeviceConfigStatus{RenderedVersion: "9"},
		Resources:  &fleetplanev1.DeviceResourceStatus{Cpu: "Healthy"},
		Conditions: []*fleetplanev1.Condition{{Type: "NewAgentCondition", Status: "False"}},
	}
	mergeAgentStatus(status, reported)
	want := &fleetplanev1.DeviceStatus{
		Summary:    &fleetplanev1.DeviceSummaryStatus{Status: "Online"},
		Updated:    &fleetplanev1.DeviceUpdatedStatus{Status: updatedOutOfDate},
		Config:     &fleetplanev1.DeviceConfigStatus{RenderedVersion: "2"},
		Resources:  &fleetplanev1.DeviceResourceStatus{Cpu: "Healthy"},
		Conditions: []*fleetplanev1.Condition{rejected, {Type: "NewAgentCondition", Status: "False"}},
	}
	if diff := cmp.Diff(want, status, protocmp.Transform()); diff != "" {
		t.Errorf("merged status differs (-want +got):\n%s", diff)
	}
}

func TestTruncateKeepsValidUTF8(t *testing.T) {
	got := truncate("ab€", 3)
	if got != "ab..." {
		t.Errorf("truncate = %q, want %q", got, "ab...")
	}
}

func TestListenAndServeTLSStops(t *testing.T) {
	e := newEnv(t, nil)
	// Reserve a free loopback port, then release it for the server.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.svc.ListenAndServeTLS(ctx, addr, nil) }()
	waitFor(t, "agent port accepting connections", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ListenAndServeTLS = %v, want nil after cancel", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("ListenAndServeTLS did not return after cancel")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	e := newEnv(t, nil)
	for name, cfg := range map[string]Config{
		"no store":          {CA: e.ca},
		"no CA":             {Store: e.store},
		"negative interval": {Store: e.store, CA: e.ca, SweepInterval: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
