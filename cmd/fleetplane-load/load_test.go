package main

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func TestParseGCTrace(t *testing.T) {
	line := "gc 14 @3.021s 2%: 0.031+1.2+0.004 ms clock, 0.062+0.30/1.1/0.9+0.008 ms cpu, " +
		"41->43->22 MB, 44 MB goal, 0 MB stacks, 0 MB globals, 2 P"

	heap, ok := parseGCTrace(line)

	if !ok {
		t.Fatalf("parseGCTrace(%q) found no heap", line)
	}
	if want := int64(22 << 20); heap != want {
		t.Errorf("heap = %d, want %d", heap, want)
	}
	if _, ok := parseGCTrace(`time=2026-12-04 level=INFO msg="gc 1 @ 2->3->4 MB"`); ok {
		t.Error("parseGCTrace accepted a log line that is not a gctrace line")
	}
}

func TestParseGauge(t *testing.T) {
	text := "# HELP fleetplane_agents_connected Agent streams open on this replica.\n" +
		"# TYPE fleetplane_agents_connected gauge\n" +
		"fleetplane_agents_connected_total 7\n" +
		`fleetplane_agents_connected{otel_scope_name="agentapi",otel_scope_version=""} 1234` + "\n"

	got, err := parseGauge(text, "fleetplane_agents_connected")

	if err != nil {
		t.Fatalf("parseGauge: %v", err)
	}
	if got != 1234 {
		t.Errorf("gauge = %d, want 1234", got)
	}
	if _, err := parseGauge("other 1\n", "fleetplane_agents_connected"); err == nil {
		t.Error("parseGauge of a missing metric succeeded, want an error")
	}
}

func TestParseRSS(t *testing.T) {
	got, err := parseRSS("Name:\tfleetplane\nVmHWM:\t  9000 kB\nVmRSS:\t  8192 kB\nThreads:\t9\n")

	if err != nil {
		t.Fatalf("parseRSS: %v", err)
	}
	if got != 8192<<10 {
		t.Errorf("RSS = %d, want %d", got, 8192<<10)
	}
	if _, err := parseRSS("Name:\tx\n"); err == nil {
		t.Error("parseRSS without a VmRSS line succeeded, want an error")
	}
}

func TestSummarizePercentiles(t *testing.T) {
	var latencies []time.Duration
	for i := 100; i >= 1; i-- {
		latencies = append(latencies, time.Duration(i)*time.Millisecond)
	}

	got := summarize(latencies)

	want := summary{count: 100, p50: 50 * time.Millisecond, p99: 99 * time.Millisecond, max: 100 * time.Millisecond}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if got := summarize(latencies[:1]); got.p50 != 100*time.Millisecond || got.p99 != 100*time.Millisecond {
		t.Errorf("summarize of one value = %+v, want p50 and p99 of 100ms", got)
	}
}

func TestMarkerTrackerDuplicates(t *testing.T) {
	markers := &markerState{}
	markers.set("change-1")
	tracker := newMarkerTracker(markers)
	spec := func(version, content string) *fleetplanev1.RenderedDeviceSpec {
		return &fleetplanev1.RenderedDeviceSpec{RenderedVersion: version, Files: []*fleetplanev1.RenderedFile{
			{Path: "/etc/load.conf", Content: []byte(content), Mode: 0o644},
		}}
	}
	ctx := context.Background()

	if err := tracker.Apply(ctx, spec("1", "marker change-1\n")); err != nil {
		t.Fatalf("Apply 1: %v", err)
	}
	_ = tracker.Apply(ctx, spec("1", "marker change-1\n"))
	if err := tracker.Apply(ctx, spec("2", "marker change-1\n")); err != nil {
		t.Fatalf("Apply 2: %v", err)
	}

	if got := tracker.duplicateCount(); got != 2 {
		t.Errorf("duplicates = %d, want 2 (version 1 twice, marker change-1 twice)", got)
	}
	if _, ok := tracker.appliedAt("change-1"); !ok {
		t.Error("appliedAt(change-1) = false, want true")
	}
	if _, ok := tracker.appliedAt("change-2"); ok {
		t.Error("appliedAt(change-2) = true for a marker never applied")
	}
}

func TestParseFlagsRejects(t *testing.T) {
	binary := filepath.Join(t.TempDir(), "fleetplane")
	tests := map[string]struct {
		args []string
		want string
	}{
		"zero count":     {[]string{"--count", "0", "--server-binary", binary}, "--count 0 is invalid"},
		"missing binary": {[]string{"--server-binary", binary}, "--server-binary"},
		"negative phase": {[]string{"--phase-timeout", "-1s"}, "--phase-timeout -1s is invalid"},
		"stray argument": {[]string{"extra"}, `unexpected argument "extra"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestRunAgainstServer builds the fleetplane binary and runs every phase with a few agents.
func TestRunAgainstServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server and restarts it; skipped with -short")
	}
	binary := filepath.Join(t.TempDir(), "fleetplane")
	build := exec.Command("go", "build", "-o", binary, "./cmd/fleetplane")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fleetplane: %v\n%s", err, out)
	}
	cfg, err := parseFlags([]string{
		"--count", "5", "--server-binary", binary, "--dir", t.TempDir(),
		"--enroll-min-delay", "20ms", "--enroll-max-delay", "200ms",
		"--reconnect-min-delay", "20ms", "--reconnect-max-delay", "500ms",
		"--phase-timeout", "90s", "--connect-timeout", "60s",
	}, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer

	res, err := run(ctx, cfg, &out)

	if err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	counts := []int{res.rollout.count, res.afterRestart.count}
	if diff := cmp.Diff([]int{5, 5}, counts); diff != "" {
		t.Errorf("devices measured in each rollout (-want +got):\n%s", diff)
	}
	if res.duplicates != 0 {
		t.Errorf("versions applied twice = %d, want 0", res.duplicates)
	}
	if res.serverConnected.rss <= 0 || res.selfConnected.rss <= 0 {
		t.Errorf("RSS server %d, simulator %d, want both positive", res.serverConnected.rss, res.selfConnected.rss)
	}
	if res.reconnectFromStart <= 0 || res.reconnectFromKill < res.reconnectFromStart {
		t.Errorf("reconnect from kill %s, from start %s, want 0 < start <= kill",
			res.reconnectFromKill, res.reconnectFromStart)
	}
	if !strings.Contains(out.String(), "versions applied twice: 0") {
		t.Errorf("report lacks the duplicate count:\n%s", out.String())
	}
}
