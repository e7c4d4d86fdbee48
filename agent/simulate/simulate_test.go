package simulate

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/agent"
	"github.com/fleetplane/fleetplane/agent/agenttest"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var fastTiming = agent.Timing{
	EnrollMinDelay: 5 * time.Millisecond, EnrollMaxDelay: 50 * time.Millisecond,
	ReconnectMinDelay: 5 * time.Millisecond, ReconnectMaxDelay: 100 * time.Millisecond,
}

// benchTiming spreads the polls of thousands of agents, so that they measure the agents
// rather than a server flooded with enrollment polls.
var benchTiming = agent.Timing{
	EnrollMinDelay: 100 * time.Millisecond, EnrollMaxDelay: 2 * time.Second,
	ReconnectMinDelay: 100 * time.Millisecond, ReconnectMaxDelay: 5 * time.Second,
}

// startSimulation runs count agents against f until the test ends.
func startSimulation(tb testing.TB, f *agenttest.Server, count int, timing agent.Timing) *Simulator {
	tb.Helper()
	sim, err := New(Options{
		Count: count, Server: f.URL(), CACertPEM: f.CAPEM, ApproveURL: f.ApproveURL,
		Labels: map[string]string{"env": "load"}, NamePrefix: "sim-",
		Timing: timing, Logger: quietLogger(),
	})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return sim
}

// waitForVersion polls until every agent runs version, or fails the test at the deadline.
func waitForVersion(tb testing.TB, sim *Simulator, version string, timeout time.Duration) Progress {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p := sim.Progress()
		if p.Connected == p.Total && p.Versions[version] == p.Total {
			return p
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for version %s: %s", version, p)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSimulatorEnrollsAndApplies(t *testing.T) {
	f := agenttest.New(t)
	f.SetApproval(agenttest.Pending)
	f.SetAutoSpec(&fleetplanev1.RenderedDeviceSpec{RenderedVersion: "5"})
	const count = 20

	sim := startSimulation(t, f, count, fastTiming)
	p := waitForVersion(t, sim, "5", agenttest.Timeout)

	if p.Enrolled != count {
		t.Errorf("enrolled = %d, want %d", p.Enrolled, count)
	}
	if got, want := p.String(), "enrolled 20/20, connected 20/20, at version 5: 20"; got != want {
		t.Errorf("Progress = %q, want %q", got, want)
	}
	names := sim.Names()
	if names[0] != "sim-00000" || names[count-1] != "sim-00019" {
		t.Errorf("names run from %q to %q, want sim-00000 to sim-00019", names[0], names[count-1])
	}
	if req := f.EnrollRequest("sim-00003"); req.GetLabels()["env"] != "load" {
		t.Errorf("enrollment labels = %v, want env=load", req.GetLabels())
	}
	waitForAcks(t, f, count)
}

func waitForAcks(tb testing.TB, f *agenttest.Server, want int) {
	tb.Helper()
	deadline := time.Now().Add(agenttest.Timeout)
	for {
		if _, _, acks := f.Counts(); acks >= want {
			return
		}
		if time.Now().After(deadline) {
			_, _, acks := f.Counts()
			tb.Fatalf("server received %d acks, want %d", acks, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProgressString(t *testing.T) {
	p := Progress{Total: 4, Enrolled: 3, Connected: 2, Versions: map[string]int{"": 1, "2": 1, "10": 2}}

	got := p.String()

	want := "enrolled 3/4, connected 2/4, at version 10: 2, at version 2: 1, none: 1"
	if got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestNewRejectsZeroCount(t *testing.T) {
	if _, err := New(Options{Count: 0}); err == nil {
		t.Error("New with count 0 succeeded, want an error")
	}
}

// BenchmarkSimulatedAgents enrolls b.N agents against the fake server, waits until all run
// the spec, and reports the heap in use per connected agent, counting the fake server's share
// of each connection too.
func BenchmarkSimulatedAgents(b *testing.B) {
	f := agenttest.New(b)
	f.SetAutoSpec(&fleetplanev1.RenderedDeviceSpec{RenderedVersion: "1"})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()

	sim := startSimulation(b, f, b.N, benchTiming)
	waitForVersion(b, sim, "1", 5*time.Minute)

	b.StopTimer()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perAgent := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(b.N)
	b.ReportMetric(perAgent, "heap-bytes/agent")
	b.ReportMetric(float64(runtime.NumGoroutine())/float64(b.N), "goroutines/agent")
}
