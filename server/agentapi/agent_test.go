package agentapi

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/agent"
	"github.com/fleetplane/fleetplane/agent/apply"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// TestRealAgentEnrollsAndApplies runs the device agent against the agent port: it enrolls,
// is approved, applies a spec, rejects one and applies a newer one.
func TestRealAgentEnrollsAndApplies(t *testing.T) {
	e := newEnv(t, nil)
	applier := &apply.Memory{Fail: func(spec *fleetplanev1.RenderedDeviceSpec) error {
		if spec.GetRenderedVersion() == "2" {
			return errors.New("bad config")
		}
		return nil
	}}
	a, err := agent.New(agent.Config{
		Server:    e.url,
		CACertPEM: e.ca.CertPEM(),
		Name:      "gw-real",
		Applier:   applier,
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		OnEnrollPending: func(context.Context, string, map[string]string) error {
			e.approve("gw-real")
			return nil
		},
		Timing: agent.Timing{
			EnrollMinDelay: 5 * time.Millisecond, EnrollMaxDelay: 20 * time.Millisecond,
			ReconnectMinDelay: 5 * time.Millisecond, ReconnectMaxDelay: 50 * time.Millisecond,
		},
	})
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	waitFor(t, "agent stream connected", func() bool { return e.svc.Connected() == 1 })
	v1 := e.render("gw-real", "one")
	e.svc.Notify("gw-real")
	e.waitDevice("gw-real", "version 1 applied", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetConfig().GetRenderedVersion() == v1
	})

	e.render("gw-real", "two")
	e.svc.Notify("gw-real")
	e.waitDevice("gw-real", "version 2 rejected", func(d *fleetplanev1.Device) bool {
		return rejectedVersion(d.GetStatus()) == 2
	})

	v3 := e.render("gw-real", "three")
	e.svc.Notify("gw-real")
	d := e.waitDevice("gw-real", "version 3 applied", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetConfig().GetRenderedVersion() == v3
	})
	if got := d.GetStatus().GetUpdated().GetStatus(); got != updatedUpToDate {
		t.Errorf("updated status = %q, want UpToDate", got)
	}
	if got := applier.Versions().Applied; got != v3 {
		t.Errorf("agent applied version %q, want %s", got, v3)
	}
}
