package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/agent/agenttest"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func writeCAFile(t *testing.T, f *agenttest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, f.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// buildAgent compiles the command into a temporary directory.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fleetplane-agent")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestRunProcessAppliesAndStops(t *testing.T) {
	f := agenttest.New(t)
	bin := buildAgent(t)
	data, root := t.TempDir(), t.TempDir()
	cmd := exec.Command(bin, "run", "--server", f.URL(), "--ca-file", writeCAFile(t, f),
		"--data-dir", data, "--root", root, "--name", "gw-1", "--label", "site=lab")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	s := f.NextStream(t)
	s.SendSpec(t, &fleetplanev1.RenderedDeviceSpec{
		RenderedVersion: "1",
		Files:           []*fleetplanev1.RenderedFile{{Path: "/etc/app.conf", Content: []byte("x=1\n")}},
	})
	ack := s.Next(t, agenttest.IsAnswer).GetAck()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()

	if s.Device != "gw-1" {
		t.Errorf("stream device = %q, want gw-1", s.Device)
	}
	if ack.GetRenderedVersion() != "1" {
		t.Errorf("ack = %v, want version 1", ack)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc/app.conf")); string(got) != "x=1\n" {
		t.Errorf("app.conf = %q, want x=1", got)
	}
	select {
	case err := <-waitErr:
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM, want status 0\n%s", err, stderr.String())
		}
	case <-time.After(agenttest.Timeout):
		t.Fatal("agent did not exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "agent stopped") {
		t.Errorf("log has no stop line:\n%s", stderr.String())
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no ca", []string{"run", "--data-dir", "d", "--root", "r"}, "--ca-file is missing"},
		{"no root", []string{"run", "--ca-file", "x", "--data-dir", "d"}, "--root are required"},
		{"label", []string{"simulate", "--ca-file", "/dev/null", "--label", "novalue"}, `--label "novalue"`},
		{"level", []string{"run", "--log-level", "loud"}, "--log-level"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := newRootCommand()
			cmd.SetArgs(c.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)

			err := cmd.ExecuteContext(context.Background())

			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestSimulatePrintsProgress(t *testing.T) {
	f := agenttest.New(t)
	f.SetApproval(agenttest.Pending)
	f.SetAutoSpec(&fleetplanev1.RenderedDeviceSpec{RenderedVersion: "4"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, w := io.Pipe()
	cmd := newRootCommand()
	cmd.SetArgs([]string{"simulate", "--count", "3", "--server", f.URL(),
		"--ca-file", writeCAFile(t, f), "--approve-server", f.ApproveURL,
		"--progress-interval", "20ms", "--log-level", "error"})
	cmd.SetOut(w)
	done := make(chan error, 1)
	go func() {
		done <- cmd.ExecuteContext(ctx)
		w.Close()
	}()

	want := "enrolled 3/3, connected 3/3, at version 4: 3"
	found := false
	lines := bufio.NewScanner(r)
	deadline := time.AfterFunc(agenttest.Timeout, cancel)
	defer deadline.Stop()
	for lines.Scan() {
		if strings.HasSuffix(lines.Text(), want) {
			found = true
			cancel()
		}
	}

	if !found {
		t.Errorf("no progress line ending in %q", want)
	}
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("simulate returned %v, want nil", err)
	}
}

// syncBuffer is a bytes.Buffer that a process and the test may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
