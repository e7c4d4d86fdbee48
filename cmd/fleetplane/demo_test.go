package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoConverges runs the whole demo: a server, three real agent processes built from
// cmd/fleetplane-agent, enrollment, approval and two rollouts.
func TestDemoConverges(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary and runs three agent processes")
	}
	agentBinary := filepath.Join(t.TempDir(), "fleetplane-agent")
	build := exec.Command("go", "build", "-o", agentBinary, "../fleetplane-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fleetplane-agent: %v\n%s", err, out)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	var stdout, stderr syncBuffer
	code := run(ctx, []string{"demo", "--until-converged", "--timeout", "90s",
		"--agent-binary", agentBinary, "--dir", dir}, strings.NewReader(""), &stdout, &stderr,
		func(string) string { return "" })

	if code != 0 {
		t.Fatalf("demo exit code = %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if got := strings.Count(stdout.String(), "converged in"); got != 2 {
		t.Errorf("demo reported %d convergences, want 2:\n%s", got, stdout.String())
	}
	motd, err := os.ReadFile(filepath.Join(dir, "agents", "demo-2", "root", "etc", "motd"))
	if err != nil {
		t.Fatalf("read demo-2's /etc/motd: %v", err)
	}
	if !strings.Contains(string(motd), "demo-2 at site berlin") {
		t.Errorf("demo-2's /etc/motd = %q, want the device name and site filled in", motd)
	}
	if !strings.Contains(string(motd), "Template changed at") {
		t.Errorf("demo-2's /etc/motd = %q, want the changed template's line", motd)
	}
}
