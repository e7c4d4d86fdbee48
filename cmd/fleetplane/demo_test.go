package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	agentBinary := buildAgent(t)
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

// TestServerRestartAgentsCatchUp restarts the server under three connected agent processes and
// changes the template afterwards: every agent reconnects, ends on the latest version, and
// applies no version twice.
func TestServerRestartAgentsCatchUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary and runs three agent processes")
	}
	agentBinary := buildAgent(t)
	var stdout, stderr syncBuffer
	a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
		getenv: func(string) string { return "" }}
	d := &demo{a: a, dir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	defer d.stopAgents()

	firstCtx, stopFirst := context.WithCancel(ctx)
	firstDone, err := d.startServer(firstCtx)
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return d.waitForServer(ctx) },
		func() error { return d.startAgents(agentBinary) },
		func() error { return d.approveAgents(ctx, time.Minute) },
		func() error { return d.applyFleet(ctx) },
		func() error { return d.waitConverged(ctx, time.Minute) },
	}
	runSteps(t, steps, &stdout)
	stopFirst()
	if err := <-firstDone; err != nil {
		t.Fatalf("first server: %v", err)
	}

	secondDone, err := d.startServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, []func() error{
		func() error { return d.waitForServer(ctx) },
		func() error { return d.changeTemplate(ctx) },
		func() error { return d.waitConverged(ctx, time.Minute) },
	}, &stdout)
	d.stopAgents()
	cancel()
	<-secondDone

	for i := range demoSites {
		name := fmt.Sprintf("demo-%d", i+1)
		log, err := os.ReadFile(filepath.Join(d.dir, "agents", name, "agent.log"))
		if err != nil {
			t.Fatal(err)
		}
		if opened := strings.Count(string(log), `msg="stream opened"`); opened < 2 {
			t.Errorf("%s opened %d streams, want at least 2 (one per server run):\n%s", name, opened, log)
		}
		applied := map[string]int{}
		for _, m := range appliedVersion.FindAllStringSubmatch(string(log), -1) {
			applied[m[1]]++
		}
		for version, count := range applied {
			if count > 1 {
				t.Errorf("%s applied version %s %d times, want once:\n%s", name, version, count, log)
			}
		}
	}
}

var appliedVersion = regexp.MustCompile(`msg="applied spec" device=\S+ rendered_version=(\d+)`)

func runSteps(t *testing.T, steps []func() error, stdout *syncBuffer) {
	t.Helper()
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("%v\ndemo output:\n%s", err, stdout.String())
		}
	}
}

func buildAgent(t *testing.T) string {
	t.Helper()
	agentBinary := filepath.Join(t.TempDir(), "fleetplane-agent")
	build := exec.Command("go", "build", "-o", agentBinary, "../fleetplane-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fleetplane-agent: %v\n%s", err, out)
	}
	return agentBinary
}
