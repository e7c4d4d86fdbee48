package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/agent/agenttest"
	"github.com/fleetplane/fleetplane/agent/apply"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// testAgent is an Agent running in the background with a real apply.Manager.
type testAgent struct {
	*Agent
	root, data string
	cancel     context.CancelFunc
	done       chan error
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fastTiming keeps enrollment polls and reconnects short so tests finish quickly.
var fastTiming = Timing{
	EnrollMinDelay: 5 * time.Millisecond, EnrollMaxDelay: 20 * time.Millisecond,
	ReconnectMinDelay: 5 * time.Millisecond, ReconnectMaxDelay: 50 * time.Millisecond,
}

func newTestAgent(t *testing.T, f *agenttest.Server, data, root string, change func(*Config)) *testAgent {
	t.Helper()
	m, err := apply.Open(data, root, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Server: f.URL(), CACertPEM: f.CAPEM, DataDir: data, Applier: m,
		Labels: map[string]string{"site": "lab"}, Logger: testLogger(), Timing: fastTiming,
	}
	if change != nil {
		change(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &testAgent{Agent: a, root: root, data: data}
}

func (ta *testAgent) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel, ta.done = cancel, make(chan error, 1)
	go func() { ta.done <- ta.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
}

// stop cancels Run and returns its result; later calls return nil.
func (ta *testAgent) stop(t *testing.T) error {
	t.Helper()
	if ta.cancel == nil {
		return nil
	}
	ta.cancel()
	ta.cancel = nil
	select {
	case err := <-ta.done:
		return err
	case <-time.After(agenttest.Timeout):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

func startTestAgent(t *testing.T, f *agenttest.Server, change func(*Config)) *testAgent {
	t.Helper()
	ta := newTestAgent(t, f, t.TempDir(), t.TempDir(), change)
	ta.start(t)
	return ta
}

func specWithFile(version, path, content string) *fleetplanev1.RenderedDeviceSpec {
	return &fleetplanev1.RenderedDeviceSpec{
		RenderedVersion: version,
		Files:           []*fleetplanev1.RenderedFile{{Path: path, Content: []byte(content)}},
	}
}

func TestAgentEnrollsAndApplies(t *testing.T) {
	f := agenttest.New(t)
	ta := startTestAgent(t, f, nil)

	s := f.NextStream(t)
	if s.Device != ta.Name() {
		t.Errorf("stream device = %q, want %q", s.Device, ta.Name())
	}
	if !strings.HasPrefix(ta.Name(), "dev-") || len(ta.Name()) != 20 {
		t.Errorf("derived name = %q, want dev- and 16 hex digits", ta.Name())
	}
	if s.Hello.GetCapabilityVersion() != CapabilityVersion || s.Hello.GetRenderedVersion() != "" {
		t.Errorf("hello = %v, want capability 1 and no version", s.Hello)
	}
	req := f.EnrollRequest(ta.Name())
	if req.GetLabels()["site"] != "lab" {
		t.Errorf("enrollment labels = %v, want site=lab", req.GetLabels())
	}
	if req.GetDeviceStatus().GetSystemInfo().GetArchitecture() == "" {
		t.Error("enrollment request has no system info")
	}

	s.SendSpec(t, specWithFile("1", "/etc/motd", "hello\n"))

	ack := s.Next(t, agenttest.IsAnswer).GetAck()
	if ack.GetRenderedVersion() != "1" {
		t.Fatalf("answer = %v, want ack of version 1", ack)
	}
	status := s.Next(t, agenttest.IsStatus).GetStatus()
	if got := status.GetConfig().GetRenderedVersion(); got != "1" {
		t.Errorf("status rendered version = %q, want 1", got)
	}
	if got := status.GetSummary().GetStatus(); got != summaryOnline {
		t.Errorf("status summary = %q, want Online", got)
	}
	if got, _ := os.ReadFile(filepath.Join(ta.root, "etc/motd")); string(got) != "hello\n" {
		t.Errorf("motd = %q, want hello", got)
	}
	info, err := os.Stat(filepath.Join(ta.data, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %#o, want 0600", info.Mode().Perm())
	}
}

func TestAgentResumesEnrollment(t *testing.T) {
	f := agenttest.New(t)
	f.SetApproval(agenttest.Pending)
	data, root := t.TempDir(), t.TempDir()
	first := newTestAgent(t, f, data, root, nil)
	first.start(t)
	waitFor(t, "a certificate poll", func() bool {
		_, certCalls, _ := f.Counts()
		return certCalls > 0
	})
	if err := first.stop(t); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}

	f.SetApproval(agenttest.Approved)
	second := newTestAgent(t, f, data, root, nil)
	second.start(t)

	s := f.NextStream(t)
	if second.Name() != first.Name() {
		t.Errorf("name after restart = %q, want %q", second.Name(), first.Name())
	}
	if second.id.keySHA256 != first.id.keySHA256 {
		t.Error("key changed across the restart")
	}
	if s.Device != first.Name() {
		t.Errorf("stream device = %q, want %q", s.Device, first.Name())
	}
	if enrollCalls, _, _ := f.Counts(); enrollCalls != 1 {
		t.Errorf("Enroll calls = %d, want 1 (the restart resumes polling)", enrollCalls)
	}
}

func TestAgentEnrollmentDenied(t *testing.T) {
	f := agenttest.New(t)
	f.SetApproval(agenttest.Denied)
	ta := newTestAgent(t, f, t.TempDir(), t.TempDir(), nil)

	err := ta.Run(context.Background())

	if !errors.Is(err, ErrEnrollmentDenied) {
		t.Errorf("Run error = %v, want ErrEnrollmentDenied", err)
	}
}

func TestAgentNameFlagConflict(t *testing.T) {
	f := agenttest.New(t)
	data := t.TempDir()
	newTestAgent(t, f, data, t.TempDir(), func(c *Config) { c.Name = "gw-1" })

	_, err := New(Config{
		Server: f.URL(), CACertPEM: f.CAPEM, DataDir: data, Name: "gw-2",
		Applier: &apply.Memory{}, Logger: testLogger(),
	})

	if err == nil || !strings.Contains(err.Error(), `"gw-1"`) {
		t.Errorf("New error = %v, want one naming the stored name gw-1", err)
	}
}

func TestAgentIgnoresOlderSpec(t *testing.T) {
	f := agenttest.New(t)
	ta := startTestAgent(t, f, nil)
	s := f.NextStream(t)
	s.SendSpec(t, specWithFile("7", "/v", "seven"))
	if got := s.Next(t, agenttest.IsAnswer).GetAck().GetRenderedVersion(); got != "7" {
		t.Fatalf("ack = %q, want 7", got)
	}

	s.SendSpec(t, specWithFile("6", "/v", "six"))

	if got := s.Next(t, agenttest.IsAnswer).GetAck().GetRenderedVersion(); got != "7" {
		t.Errorf("answer to version 6 acks %q, want 7", got)
	}
	if got, _ := os.ReadFile(filepath.Join(ta.root, "v")); string(got) != "seven" {
		t.Errorf("file = %q, want seven", got)
	}
}

func TestAgentRejectsBadSpec(t *testing.T) {
	f := agenttest.New(t)
	ta := startTestAgent(t, f, nil)
	s := f.NextStream(t)
	s.SendSpec(t, specWithFile("1", "/ok", "ok"))
	s.Next(t, agenttest.IsAnswer)

	s.SendSpec(t, specWithFile("2", "/../escape", "x"))

	reject := s.Next(t, agenttest.IsAnswer).GetReject()
	if reject.GetRenderedVersion() != "2" || !strings.Contains(reject.GetError(), "escapes") {
		t.Errorf("answer = %v, want a reject of version 2 naming the escape", reject)
	}
	status := s.Next(t, agenttest.IsStatus).GetStatus()
	if got := status.GetSummary().GetStatus(); got != summaryDegraded {
		t.Errorf("summary = %q, want Degraded", got)
	}
	if got := status.GetConfig().GetRenderedVersion(); got != "1" {
		t.Errorf("status rendered version = %q, want 1", got)
	}
	if got, _ := os.ReadFile(filepath.Join(ta.root, "ok")); string(got) != "ok" {
		t.Errorf("file of version 1 = %q, want ok", got)
	}
}

func TestAgentRestartKeepsVersion(t *testing.T) {
	f := agenttest.New(t)
	data, root := t.TempDir(), t.TempDir()
	first := newTestAgent(t, f, data, root, nil)
	first.start(t)
	s := f.NextStream(t)
	s.SendSpec(t, specWithFile("3", "/v", "three"))
	s.Next(t, agenttest.IsAnswer)
	first.stop(t)
	// A local edit shows whether the restarted agent writes the file again.
	if err := os.WriteFile(filepath.Join(root, "v"), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}

	second := newTestAgent(t, f, data, root, nil)
	second.start(t)
	s = f.NextStream(t)
	s.SendSpec(t, specWithFile("3", "/v", "three"))

	if got := s.Hello.GetRenderedVersion(); got != "3" {
		t.Errorf("hello version after restart = %q, want 3", got)
	}
	if got := s.Next(t, agenttest.IsAnswer).GetAck().GetRenderedVersion(); got != "3" {
		t.Errorf("answer = %q, want ack of 3", got)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "v")); string(got) != "edited" {
		t.Errorf("file = %q, want the local edit kept", got)
	}
}

// delayRecorder replaces Agent.wait and records the delays the agent requests.
type delayRecorder struct {
	mu     sync.Mutex
	delays []time.Duration
	// sleep, when true, waits for real; otherwise the wait returns at once.
	sleep bool
}

func (r *delayRecorder) wait(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.delays = append(r.delays, d)
	r.mu.Unlock()
	if r.sleep {
		return sleep(ctx, d)
	}
	return ctx.Err()
}

func (r *delayRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.delays)
}

func TestAgentReconnectsAfterRestart(t *testing.T) {
	f := agenttest.New(t)
	ta := newTestAgent(t, f, t.TempDir(), t.TempDir(), nil)
	rec := &delayRecorder{sleep: true}
	ta.wait = rec.wait
	ta.start(t)
	s := f.NextStream(t)
	s.SendSpec(t, specWithFile("2", "/v", "two"))
	s.Next(t, agenttest.IsAnswer)

	addr := f.Addr
	f.Stop()
	waitFor(t, "a reconnect attempt", func() bool { return rec.count() >= 2 })
	f.Start(addr)

	s = f.NextStream(t)
	if got := s.Hello.GetRenderedVersion(); got != "2" {
		t.Errorf("hello version after reconnect = %q, want 2", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.delays) < 2 {
		t.Fatalf("recorded %d delays, want at least 2", len(rec.delays))
	}
	for i, d := range rec.delays {
		if d < fastTiming.ReconnectMinDelay || d > fastTiming.ReconnectMaxDelay {
			t.Errorf("delay %d = %v, want between %v and %v", i, d,
				fastTiming.ReconnectMinDelay, fastTiming.ReconnectMaxDelay)
		}
	}
}

func TestAgentBacksOffWhenRefused(t *testing.T) {
	f := agenttest.New(t)
	f.SetStreamError(connect.NewError(connect.CodeNotFound, errors.New("device not found")))
	ta := newTestAgent(t, f, t.TempDir(), t.TempDir(), func(c *Config) {
		c.Timing.ReconnectMaxDelay = time.Minute
	})
	rec := &delayRecorder{}
	ta.wait = rec.wait
	ta.start(t)

	const attempts = 10
	waitFor(t, "refused attempts", func() bool { return rec.count() >= attempts })
	ta.stop(t)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var total time.Duration
	for i, d := range rec.delays[:attempts] {
		total += d
		if d < 30*time.Second {
			t.Errorf("delay %d after NOT_FOUND = %v, want at least 30s (half the maximum)", i, d)
		}
	}
	// Ten attempts must spread over at least five minutes of (virtual) time.
	if total < attempts*30*time.Second {
		t.Errorf("%d attempts took %v of delays, want at least %v", attempts, total, attempts*30*time.Second)
	}
}

func TestAgentDropsSilentStream(t *testing.T) {
	f := agenttest.New(t)
	startTestAgent(t, f, func(c *Config) {
		c.Timing.DeadAfter = 200 * time.Millisecond
		c.Timing.Keepalive = 50 * time.Millisecond
	})

	first := f.NextStream(t)
	second := f.NextStream(t)

	if first.Device != second.Device {
		t.Errorf("second stream from %q, want %q", second.Device, first.Device)
	}
	if first.Next(t, agenttest.IsKeepalive) == nil {
		t.Error("no keepalive on the silent stream")
	}
}

func TestAgentSendsPeriodicStatus(t *testing.T) {
	f := agenttest.New(t)
	startTestAgent(t, f, func(c *Config) { c.StatusInterval = 20 * time.Millisecond })
	s := f.NextStream(t)

	for i := range 3 {
		status := s.Next(t, agenttest.IsStatus).GetStatus()
		info := status.GetSystemInfo()
		if info.GetOperatingSystem() == "" || info.GetHostname() == "" || info.GetAgentVersion() == "" {
			t.Errorf("status %d system info = %v, want OS, hostname and agent version", i, info)
		}
		if status.GetSummary().GetStatus() != summaryOnline {
			t.Errorf("status %d summary = %v, want Online", i, status.GetSummary())
		}
		usage := status.GetResources().GetUsage()
		if usage.GetMemoryPercent() <= 0 || usage.GetMemoryPercent() > 100 {
			t.Errorf("status %d memory = %v%%, want within (0, 100]", i, usage.GetMemoryPercent())
		}
		if usage.GetDiskPercent() <= 0 || usage.GetDiskPercent() > 100 {
			t.Errorf("status %d disk = %v%%, want within (0, 100]", i, usage.GetDiskPercent())
		}
	}
}

// waitFor polls cond until it holds or the test times out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(agenttest.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// steppingClock returns a time that advances by step on every call.
type steppingClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *steppingClock) read() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

func TestAgentBackoffResetsAfterStableStream(t *testing.T) {
	for _, c := range []struct {
		name      string
		up        time.Duration
		wantReset bool
	}{
		{"stable", 2 * time.Minute, true},
		{"short", time.Second, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := agenttest.New(t)
			ta := newTestAgent(t, f, t.TempDir(), t.TempDir(), func(cfg *Config) {
				cfg.Timing.ReconnectMinDelay = time.Second
				cfg.Timing.ReconnectMaxDelay = time.Hour
			})
			rec := &delayRecorder{}
			ta.wait = rec.wait
			ta.now = (&steppingClock{now: time.Unix(0, 0), step: c.up}).read
			ta.start(t)

			const streams = 5
			for range streams {
				s := f.NextStream(t)
				s.SendKeepalive(t) // a message from the server shows that the stream was up
				s.End(nil)
			}
			waitFor(t, "reconnect delays", func() bool { return rec.count() >= streams })
			ta.stop(t)

			rec.mu.Lock()
			defer rec.mu.Unlock()
			last := rec.delays[streams-1]
			if c.wantReset && last > time.Second {
				t.Errorf("delay after %d stable streams = %v, want the 1s minimum", streams, last)
			}
			if !c.wantReset && last < 8*time.Second {
				t.Errorf("delay after %d short streams = %v, want at least 8s (half of 16s)", streams, last)
			}
		})
	}
}

func TestAgentFinishesInterruptedApply(t *testing.T) {
	f := agenttest.New(t)
	data, root := t.TempDir(), t.TempDir()
	// The state a process leaves when it dies while applying version 2 over version 1.
	state := `{
  "current": {"renderedVersion": "1", "files": [{"path": "/a", "content": "MQ=="}]},
  "current_files": ["/a"],
  "desired": {"renderedVersion": "2", "files": [{"path": "/b", "content": "Mg=="}]}
}`
	if err := os.WriteFile(filepath.Join(data, apply.StateFileName), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "a"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	ta := newTestAgent(t, f, data, root, nil)
	ta.start(t)

	s := f.NextStream(t)

	if got := s.Hello.GetRenderedVersion(); got != "2" {
		t.Errorf("hello version = %q, want 2 (the interrupted apply finished first)", got)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "b")); string(got) != "2" {
		t.Errorf("b = %q, want 2", got)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); err == nil {
		t.Error("a of version 1 still exists after version 2 was applied")
	}
}

func TestAgentNameTakenByAnotherKey(t *testing.T) {
	f := agenttest.New(t)
	f.SetApproval(agenttest.Pending)
	first := newTestAgent(t, f, t.TempDir(), t.TempDir(), func(c *Config) { c.Name = "gw-1" })
	first.start(t)
	waitFor(t, "the first enrollment", func() bool { return f.EnrollRequest("gw-1") != nil })
	second := newTestAgent(t, f, t.TempDir(), t.TempDir(), func(c *Config) { c.Name = "gw-1" })

	err := second.Run(context.Background())

	if err == nil || !strings.Contains(err.Error(), "taken by another device") {
		t.Errorf("Run error = %v, want one saying the name is taken", err)
	}
}
