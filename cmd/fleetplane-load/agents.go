package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/agent"
	"github.com/fleetplane/fleetplane/agent/apply"
	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// markerTracker records, for one simulated device, when it applied a spec that contains the
// current marker, and counts applies that repeat a version or a marker.
//
// The agent acknowledges a version right after Apply returns, on the same goroutine, so the
// apply time stands in for the acknowledgement time (they differ by one stream send).
type markerTracker struct {
	apply.Memory
	markers *markerState

	mu sync.Mutex
	// versions contains every rendered version passed to Apply.
	versions map[string]bool
	// markers contains every marker this device applied, with the time of the first apply.
	applied map[string]time.Time
	// duplicates counts Apply calls for a version or a marker this device already had.
	duplicates int
}

// markerState is the marker that the latest template change put into the fleet's file.
type markerState struct {
	current atomic.Pointer[string]
}

func (m *markerState) set(marker string) { m.current.Store(&marker) }

func (m *markerState) get() string {
	if p := m.current.Load(); p != nil {
		return *p
	}
	return ""
}

func newMarkerTracker(markers *markerState) *markerTracker {
	return &markerTracker{
		markers:  markers,
		versions: map[string]bool{},
		applied:  map[string]time.Time{},
	}
}

// Apply applies spec in memory and records the time when spec carries the current marker.
func (t *markerTracker) Apply(ctx context.Context, spec *fleetplanev1.RenderedDeviceSpec) error {
	now := time.Now()
	version := spec.GetRenderedVersion()
	t.mu.Lock()
	if t.versions[version] {
		t.duplicates++
	}
	t.versions[version] = true
	t.mu.Unlock()

	if err := t.Memory.Apply(ctx, spec); err != nil {
		return err
	}

	marker := t.markers.get()
	if marker == "" || !specContains(spec, marker) {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.applied[marker]; ok {
		t.duplicates++
		return nil
	}
	t.applied[marker] = now
	return nil
}

// appliedAt returns when this device applied marker, and false if it has not.
func (t *markerTracker) appliedAt(marker string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.applied[marker]
	return at, ok
}

func (t *markerTracker) duplicateCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.duplicates
}

func specContains(spec *fleetplanev1.RenderedDeviceSpec, marker string) bool {
	for _, f := range spec.GetFiles() {
		if bytes.Contains(f.GetContent(), []byte(marker)) {
			return true
		}
	}
	return false
}

// fixedHost reports fixed system facts, so that thousands of agents do not read /proc.
type fixedHost struct{ name string }

func (h *fixedHost) SystemInfo() *fleetplanev1.DeviceSystemInfo {
	return &fleetplanev1.DeviceSystemInfo{
		Architecture: "amd64", OperatingSystem: "linux", Hostname: h.name, BootId: "load",
	}
}

func (h *fixedHost) Usage() *fleetplanev1.DeviceResourceUsage {
	return &fleetplanev1.DeviceResourceUsage{CpuPercent: 5, MemoryPercent: 30, DiskPercent: 40}
}

// devices is the set of simulated agents with their trackers.
type devices struct {
	agents   []*agent.Agent
	trackers []*markerTracker
	markers  *markerState
}

// agentOptions configures newDevices.
type agentOptions struct {
	count          int
	agentURL       string
	caPEM          []byte
	api            *client.Client
	statusInterval time.Duration
	timing         agent.Timing
	logger         *slog.Logger
}

// newDevices creates count simulated agents named load-00000, load-00001 and so on, labelled
// fleet=load, that approve their own enrollment requests through api.
func newDevices(opts agentOptions) (*devices, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(opts.caPEM) {
		return nil, errors.New("server CA file contains no PEM certificate")
	}
	enrollHTTP := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
	}}
	approve := func(ctx context.Context, name string, labels map[string]string) error {
		_, err := opts.api.EnrollmentRequests.ApproveEnrollmentRequest(ctx, connect.NewRequest(
			&fleetplanev1.ApproveEnrollmentRequestRequest{Name: name, Approved: true, Labels: labels}))
		if err != nil {
			return fmt.Errorf("approve enrollment request %s: %w", name, err)
		}
		return nil
	}

	d := &devices{markers: &markerState{}}
	for i := range opts.count {
		tracker := newMarkerTracker(d.markers)
		name := fmt.Sprintf("load-%05d", i)
		a, err := agent.New(agent.Config{
			Server:           opts.agentURL,
			CACertPEM:        opts.caPEM,
			Name:             name,
			Labels:           map[string]string{"fleet": "load"},
			StatusInterval:   opts.statusInterval,
			Applier:          tracker,
			Host:             &fixedHost{name: name},
			Logger:           opts.logger,
			EnrollHTTPClient: enrollHTTP,
			OnEnrollPending:  approve,
			Timing:           opts.timing,
		})
		if err != nil {
			return nil, fmt.Errorf("simulated device %s: %w", name, err)
		}
		d.agents = append(d.agents, a)
		d.trackers = append(d.trackers, tracker)
	}
	return d, nil
}

// run starts every agent, startInterval apart, and returns once all have started. The agents
// stop when ctx ends; wait blocks until they have.
func (d *devices) run(ctx context.Context, startInterval time.Duration) (wait func() error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, a := range d.agents {
		if i > 0 && startInterval > 0 && sleepCtx(ctx, startInterval) != nil {
			break
		}
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("device %s: %w", a.Name(), err))
				mu.Unlock()
			}
		})
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
}

// progress counts the agents that are enrolled, hold a stream, and applied marker.
type progress struct {
	total, enrolled, connected, atMarker int
}

func (p progress) String() string {
	return fmt.Sprintf("enrolled %d/%d, connected %d/%d, applied current template %d/%d",
		p.enrolled, p.total, p.connected, p.total, p.atMarker, p.total)
}

func (d *devices) progress(marker string) progress {
	p := progress{total: len(d.agents)}
	for i, a := range d.agents {
		snap := a.Snapshot()
		if snap.Enrolled {
			p.enrolled++
		}
		if snap.Connected {
			p.connected++
		}
		if _, ok := d.trackers[i].appliedAt(marker); ok {
			p.atMarker++
		}
	}
	return p
}

// latencies returns, for every device that applied marker, the time from since to its apply.
func (d *devices) latencies(marker string, since time.Time) []time.Duration {
	out := make([]time.Duration, 0, len(d.trackers))
	for _, t := range d.trackers {
		if at, ok := t.appliedAt(marker); ok {
			out = append(out, at.Sub(since))
		}
	}
	return out
}

func (d *devices) duplicates() int {
	n := 0
	for _, t := range d.trackers {
		n += t.duplicateCount()
	}
	return n
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
