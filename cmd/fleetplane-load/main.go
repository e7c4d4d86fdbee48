// Command fleetplane-load measures agent fan-out against a real server on 127.0.0.1.
//
// It starts `fleetplane serve` as a child process, so that the server's memory is measured
// apart from the simulator's, and runs --count simulated agents in its own process. Then it
//
//  1. records the memory of both processes per connected agent,
//  2. changes the fleet template and measures, for each device, the time from the update call
//     to the moment that device applied the new spec (the agent acknowledges right after),
//  3. kills the server with SIGKILL, starts it again on the same ports and data directory, and
//     measures until every stream is back and every device is at the latest version, counting
//     versions applied twice,
//  4. changes the template once more, to show that the new streams carry specs.
//
// Every wait has a timeout and the whole run stops after --timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fleetplane/fleetplane/agent"
)

// config holds the command-line flags.
type config struct {
	count          int
	serverBinary   string
	serverFlags    []string
	dir            string
	startInterval  time.Duration
	statusInterval time.Duration
	timing         agent.Timing
	connectTimeout time.Duration
	phaseTimeout   time.Duration
	timeout        time.Duration
	progressEvery  time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("fleetplane-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.count, "count", 1000, "number of simulated agents")
	fs.StringVar(&c.serverBinary, "server-binary", "bin/fleetplane", "path of the fleetplane program to run as the server")
	fs.Func("server-flag", "extra flag for the server process, such as --debug-listen=127.0.0.1:6060 (repeatable)",
		func(v string) error {
			c.serverFlags = append(c.serverFlags, v)
			return nil
		})
	fs.StringVar(&c.dir, "dir", "", "directory for the server's data and logs (default: a new temporary directory, removed at exit)")
	fs.DurationVar(&c.startInterval, "start-interval", time.Millisecond, "pause between starting two agents")
	fs.DurationVar(&c.statusInterval, "status-interval", time.Minute, "time between each agent's status reports")
	fs.DurationVar(&c.timing.EnrollMinDelay, "enroll-min-delay", 0, "first delay between enrollment polls (0: the agent's default)")
	fs.DurationVar(&c.timing.EnrollMaxDelay, "enroll-max-delay", 0, "maximum delay between enrollment polls (0: the agent's default)")
	fs.DurationVar(&c.timing.ReconnectMinDelay, "reconnect-min-delay", 0, "first delay before reconnecting a stream (0: the agent's default)")
	fs.DurationVar(&c.timing.ReconnectMaxDelay, "reconnect-max-delay", 0, "maximum delay before reconnecting a stream (0: the agent's default)")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 20*time.Minute, "time allowed for every agent to enroll, connect and apply the first spec")
	fs.DurationVar(&c.phaseTimeout, "phase-timeout", 10*time.Minute, "time allowed for each rollout and for reconnecting after the restart")
	fs.DurationVar(&c.timeout, "timeout", 45*time.Minute, "time limit of the whole run")
	fs.DurationVar(&c.progressEvery, "progress-interval", 10*time.Second, "time between progress lines")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: fleetplane-load takes flags only", fs.Arg(0))
	}
	if c.count <= 0 {
		return c, fmt.Errorf("--count %d is invalid: give a positive number of agents", c.count)
	}
	for name, d := range map[string]time.Duration{
		"--connect-timeout": c.connectTimeout, "--phase-timeout": c.phaseTimeout,
		"--timeout": c.timeout, "--progress-interval": c.progressEvery,
	} {
		if d <= 0 {
			return c, fmt.Errorf("%s %s is invalid: give a positive duration", name, d)
		}
	}
	if _, err := os.Stat(c.serverBinary); err != nil {
		return c, fmt.Errorf("--server-binary: %w; build it with make build", err)
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetplane-load:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if _, err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fleetplane-load:", err)
		os.Exit(1)
	}
}

// workDir returns cfg.dir, created if needed, or a new temporary directory and a function
// that removes it.
func workDir(dir string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o700)
	}
	tmp, err := os.MkdirTemp("", "fleetplane-load-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// agentLogger writes the agents' warnings and errors to DIR/agents.log.
func agentLogger(dir string) (*slog.Logger, func(), error) {
	f, err := os.Create(dir + "/agents.log")
	if err != nil {
		return nil, nil, fmt.Errorf("create agent log: %w", err)
	}
	log := slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return log, func() { f.Close() }, nil
}
