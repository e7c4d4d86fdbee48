package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// realisticObjects returns two objects of each kind with long, but plausible, values.
func realisticObjects(now time.Time) map[string][]proto.Message {
	created := timestamppb.New(now.Add(-26 * time.Hour))
	meta := func(name string) *fleetplanev1.ObjectMeta {
		return &fleetplanev1.ObjectMeta{Name: name, CreationTimestamp: created,
			Owner: "Fleet/warehouse-gateways-eu-central"}
	}
	cond := func(typ string) []*fleetplanev1.Condition {
		return []*fleetplanev1.Condition{{Type: typ, Status: "True"}}
	}
	return map[string][]proto.Message{
		"Device": {
			&fleetplanev1.Device{Metadata: meta("warehouse-gateway-frankfurt-0042"),
				Status: &fleetplanev1.DeviceStatus{
					Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Degraded"},
					Updated: &fleetplanev1.DeviceUpdatedStatus{Status: "OutOfDate"},
					Config:  &fleetplanev1.DeviceConfigStatus{RenderedVersion: "1234567"}}},
			&fleetplanev1.Device{Metadata: meta("k1")},
		},
		"Fleet": {&fleetplanev1.Fleet{Metadata: meta("warehouse-gateways-eu-central"),
			Spec: &fleetplanev1.FleetSpec{Selector: &fleetplanev1.LabelSelector{
				MatchLabels: map[string]string{"fleet": "warehouse", "region": "eu-central-1"},
				MatchExpressions: []*fleetplanev1.LabelSelectorRequirement{
					{Key: "site", Operator: "In", Values: []string{"fra", "muc", "ber"}}}}},
			Status: &fleetplanev1.FleetStatus{Conditions: cond("Valid"),
				DevicesSummary: &fleetplanev1.FleetDevicesSummary{Total: 12345}}}},
		"TemplateVersion": {&fleetplanev1.TemplateVersion{
			Metadata: meta("warehouse-gateways-eu-central-20261204-143000"),
			Spec:     &fleetplanev1.TemplateVersionSpec{Fleet: "warehouse-gateways-eu-central"}}},
		"Repository": {&fleetplanev1.Repository{Metadata: meta("warehouse-configs"),
			Spec: &fleetplanev1.RepositorySpec{Type: "git",
				Url: "https://git.example.com/operations/warehouse/gateway-configuration.git"},
			Status: &fleetplanev1.RepositoryStatus{Conditions: cond("Accessible")}}},
		"ResourceSync": {&fleetplanev1.ResourceSync{Metadata: meta("warehouse-fleets"),
			Spec: &fleetplanev1.ResourceSyncSpec{Repository: "warehouse-configs",
				Path: "/fleets/eu-central/warehouse/gateways"}}},
		"EnrollmentRequest": {&fleetplanev1.EnrollmentRequest{
			Metadata: meta("a3f9c2e1d4b5a6978877665544332211ffeeddccbbaa")}},
		"Event": {&fleetplanev1.Event{Metadata: meta("e1"), Type: "Warning",
			Reason:         "ResourceSyncSucceeded",
			InvolvedObject: &fleetplanev1.ObjectReference{Kind: "ResourceSync", Name: "warehouse-fleets"},
			Message: "ResourceSync warehouse-fleets applied 14 fleets from commit " +
				"3f2a9c1 of warehouse-configs"}},
		"Task": {&fleetplanev1.Task{Kind: "FleetSelectorMatch",
			Key: "Device/warehouse-gateway-frankfurt-0042", State: "Failed", Attempts: 12,
			LastError: "update device owner: the object was modified since it was read"}},
		"Replica": {&fleetplanev1.Replica{Id: "fleetplane-7f9c6d5b8-x2kqz",
			Address: "10.12.34.56:7081", HeartbeatTime: timestamppb.New(now.Add(-3 * time.Second)),
			Leases: make([]*fleetplanev1.ShardLease, 64)}},
	}
}

func TestTableFitsWidth(t *testing.T) {
	now := time.Now()
	for kindName, objs := range realisticObjects(now) {
		kind, err := client.ResolveKind(kindName)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		a := &app{stdout: &out}
		if err := a.printList(kind, objs, outputTable); err != nil {
			t.Fatalf("%s: printList: %v", kindName, err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != len(objs)+1 {
			t.Errorf("%s: %d lines, want header and %d rows", kindName, len(lines), len(objs))
		}
		if !strings.HasPrefix(lines[0], columns(kind)[0]) {
			t.Errorf("%s: header %q", kindName, lines[0])
		}
		for _, line := range lines {
			if n := utf8.RuneCountInString(line); n > tableWidth {
				t.Errorf("%s: line of %d characters: %q", kindName, n, line)
			}
		}
	}
}

func TestTableKeepsShortCells(t *testing.T) {
	now := time.Now()
	var out bytes.Buffer
	a := &app{stdout: &out}
	kind, _ := client.ResolveKind("events")
	if err := a.printList(kind, realisticObjects(now)["Event"], outputTable); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"26h  ", "Warning  ", "ResourceSync", "resourcesync/", "…"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("event table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFleetRowWithoutSummary(t *testing.T) {
	now := time.Now()
	f := &fleetplanev1.Fleet{Metadata: &fleetplanev1.ObjectMeta{Name: "f"}}
	if got := row(f, now)[3]; got != "-" {
		t.Errorf("DEVICES without a devices summary = %q, want -", got)
	}
	f.Status = &fleetplanev1.FleetStatus{DevicesSummary: &fleetplanev1.FleetDevicesSummary{}}
	if got := row(f, now)[3]; got != "0" {
		t.Errorf("DEVICES with a summary of 0 devices = %q, want 0", got)
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{45 * time.Second, "45s"},
		{5*time.Minute + 30*time.Second, "5m"},
		{2 * time.Hour, "2h"},
		{47 * time.Hour, "47h"},
		{3*24*time.Hour + time.Hour, "3d"},
	}
	for _, tt := range tests {
		if got := age(timestamppb.New(now.Add(-tt.ago)), now); got != tt.want {
			t.Errorf("age(%v ago) = %q, want %q", tt.ago, got, tt.want)
		}
	}
	if got := age(nil, now); got != "-" {
		t.Errorf("age(nil) = %q, want -", got)
	}
}

func TestSelectorFormat(t *testing.T) {
	s := &fleetplanev1.LabelSelector{
		MatchLabels: map[string]string{"b": "2", "a": "1"},
		MatchExpressions: []*fleetplanev1.LabelSelectorRequirement{
			{Key: "site", Operator: "NotIn", Values: []string{"x", "y"}},
			{Key: "gpu", Operator: "Exists"},
			{Key: "old", Operator: "DoesNotExist"},
		},
	}
	want := "a=1,b=2,site notin (x,y),gpu,!old"
	if got := selector(s); got != want {
		t.Errorf("selector = %q, want %q", got, want)
	}
}

func TestAgentSessionRow(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	s := &fleetplanev1.AgentSession{Device: "kiosk-1", Replica: "r2",
		OpenTime: timestamppb.New(now.Add(-90 * time.Second))}
	got := row(s, now)
	want := []string{"kiosk-1", "r2", "1m"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("row = %q; want %q", got, want)
	}
	kind, err := client.ResolveKind("sessions")
	if err != nil {
		t.Fatalf("ResolveKind(sessions): %v", err)
	}
	if got := len(columns(kind)); got != len(want) {
		t.Errorf("AgentSession has %d columns; want %d", got, len(want))
	}
}

func TestWideTableTrimsNothing(t *testing.T) {
	now := time.Now()
	var out bytes.Buffer
	a := &app{stdout: &out}
	kind, _ := client.ResolveKind("events")
	events := realisticObjects(now)["Event"]
	if err := a.printList(kind, events, outputWide); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "…") {
		t.Errorf("wide table trimmed a cell:\n%s", out.String())
	}
	for _, obj := range events {
		if msg := obj.(*fleetplanev1.Event).GetMessage(); !strings.Contains(out.String(), msg) {
			t.Errorf("wide table lacks the whole message %q:\n%s", msg, out.String())
		}
	}
}
