package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/fleetplane/fleetplane/client"
	"github.com/fleetplane/fleetplane/client/resourcefile"
	"github.com/fleetplane/fleetplane/examples"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server"
)

func init() {
	extraCommands = append(extraCommands, newDemoCommand)
}

// demoSites are the site labels of the demo's devices, one device each.
var demoSites = []string{"lab", "berlin", "lisbon"}

// demoOptions are the flags of the demo command.
type demoOptions struct {
	dir            string
	keep           bool
	untilConverged bool
	timeout        time.Duration
	agentBinary    string
}

func newDemoCommand(a *app) *cobra.Command {
	var opts demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a server and three real agents, roll out a fleet and show the devices converge",
		Long: `demo starts a server with the embedded store, starts three fleetplane-agent processes
that enroll, approves them with labels, applies the example fleet (examples/fleet.yaml, whose
config file uses the device's name and site label), and prints progress until every device
reports UpToDate with its files on disk. Then it changes the template and shows the new version
converge. Without --until-converged it keeps running until interrupted, so you can use the
printed --server URL with the other commands.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), a, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.dir, "dir", "", "directory for the demo's data (default: a new temporary directory)")
	f.BoolVar(&opts.keep, "keep", false, "keep the demo directory on exit")
	f.BoolVar(&opts.untilConverged, "until-converged", false,
		"exit 0 once both rollouts converged, non-zero on timeout")
	f.DurationVar(&opts.timeout, "timeout", 2*time.Minute, "how long each rollout may take to converge")
	f.StringVar(&opts.agentBinary, "agent-binary", "",
		"path of fleetplane-agent (default: next to this program, then $PATH)")
	return cmd
}

// demo is one run of the demo: its directory, ports, client and agent processes.
type demo struct {
	a        *app
	dir      string
	api      *client.Client
	apiURL   string
	agentURL string
	agents   []*exec.Cmd
	// marker is text that every device's files contain once the current template reached them,
	// so a finished rollout is not mistaken for one whose render has not happened yet.
	marker string
}

func runDemo(ctx context.Context, a *app, opts demoOptions) (err error) {
	agentBinary, err := findAgentBinary(opts.agentBinary)
	if err != nil {
		return err
	}
	d := &demo{a: a}
	if d.dir, err = demoDir(opts.dir); err != nil {
		return err
	}
	if !opts.keep && opts.dir == "" {
		defer os.RemoveAll(d.dir)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	serverDone, err := d.startServer(ctx)
	if err != nil {
		return err
	}
	defer func() {
		d.stopAgents()
		cancel()
		if serverErr := <-serverDone; serverErr != nil && err == nil {
			err = serverErr
		}
	}()
	if err := d.waitForServer(ctx); err != nil {
		return err
	}
	d.printf("server: %s (agent port %s), data in %s\n", d.apiURL, d.agentURL, d.dir)

	if err := d.startAgents(agentBinary); err != nil {
		return err
	}
	if err := d.approveAgents(ctx, opts.timeout); err != nil {
		return err
	}
	if err := d.applyFleet(ctx); err != nil {
		return err
	}
	if err := d.waitConverged(ctx, opts.timeout); err != nil {
		return err
	}
	if err := d.changeTemplate(ctx); err != nil {
		return err
	}
	if err := d.waitConverged(ctx, opts.timeout); err != nil {
		return err
	}
	if opts.untilConverged {
		d.printf("demo converged twice; stopping\n")
		return nil
	}
	d.printf("\ndemo is running; try: fleetplane --server %s get devices\npress Ctrl-C to stop\n", d.apiURL)
	<-ctx.Done()
	return nil
}

func (d *demo) printf(format string, args ...any) {
	fmt.Fprintf(d.a.stdout, format, args...)
}

// findAgentBinary returns the fleetplane-agent program: the flag's value, the file next to
// this program, or the one on $PATH.
func findAgentBinary(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if self, err := os.Executable(); err == nil {
		sibling := filepath.Join(filepath.Dir(self), "fleetplane-agent")
		if _, err := os.Stat(sibling); err == nil {
			return sibling, nil
		}
	}
	path, err := exec.LookPath("fleetplane-agent")
	if err != nil {
		return "", errors.New("fleetplane-agent not found next to this program or on $PATH; " +
			`build both with "make build" and run bin/fleetplane demo, or pass --agent-binary`)
	}
	return path, nil
}

func demoDir(dir string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "fleetplane-demo-")
	}
	return dir, os.MkdirAll(dir, 0o700)
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startServer runs a complete server in this process, logging to DIR/server.log. The first
// call picks free ports; later calls restart the server on the same ports and data.
func (d *demo) startServer(ctx context.Context) (<-chan error, error) {
	if d.apiURL == "" {
		apiAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		agentAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		d.apiURL, d.agentURL = "http://"+apiAddr, "https://"+agentAddr
		d.api = client.New(d.apiURL)
	}
	apiAddr := strings.TrimPrefix(d.apiURL, "http://")
	agentAddr := strings.TrimPrefix(d.agentURL, "https://")
	logFile, err := os.OpenFile(filepath.Join(d.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		defer logFile.Close()
		err := server.ListenAndServe(ctx, server.Options{
			ListenAddr:      apiAddr,
			AgentListenAddr: agentAddr,
			DataDir:         filepath.Join(d.dir, "server"),
			Logger:          slog.New(slog.NewTextHandler(logFile, nil)),
		})
		if err != nil {
			err = fmt.Errorf("demo server failed (see %s): %w", logFile.Name(), err)
		}
		done <- err
	}()
	return done, nil
}

// waitForServer polls the API until a call succeeds.
func (d *demo) waitForServer(ctx context.Context) error {
	return poll(ctx, 30*time.Second, "the server to start", func() (bool, error) {
		_, err := d.api.Fleets.ListFleets(ctx, connect.NewRequest(&fleetplanev1.ListFleetsRequest{}))
		return err == nil, nil
	})
}

// startAgents starts one fleetplane-agent process per demo site.
func (d *demo) startAgents(binary string) error {
	caFile := filepath.Join(d.dir, "server", "pki", "ca.crt")
	for i := range demoSites {
		name := fmt.Sprintf("demo-%d", i+1)
		agentDir := filepath.Join(d.dir, "agents", name)
		if err := os.MkdirAll(agentDir, 0o700); err != nil {
			return fmt.Errorf("create agent directory: %w", err)
		}
		logFile, err := os.Create(filepath.Join(agentDir, "agent.log"))
		if err != nil {
			return fmt.Errorf("create agent log: %w", err)
		}
		cmd := exec.Command(binary, "run", "--server", d.agentURL, "--ca-file", caFile,
			"--data-dir", filepath.Join(agentDir, "data"), "--root", filepath.Join(agentDir, "root"),
			"--name", name, "--status-interval", "5s")
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			logFile.Close()
			return fmt.Errorf("start %s: %w", binary, err)
		}
		logFile.Close()
		d.agents = append(d.agents, cmd)
		d.printf("agent %s: started (pid %d), root %s\n", name, cmd.Process.Pid,
			filepath.Join(agentDir, "root"))
	}
	return nil
}

// stopAgents stops the agent processes and waits for them.
func (d *demo) stopAgents() {
	for _, cmd := range d.agents {
		_ = cmd.Process.Signal(os.Interrupt)
	}
	for _, cmd := range d.agents {
		_ = cmd.Wait()
	}
}

// approveAgents waits for each agent's enrollment request and approves it with its labels.
func (d *demo) approveAgents(ctx context.Context, timeout time.Duration) error {
	for i, site := range demoSites {
		name := fmt.Sprintf("demo-%d", i+1)
		err := poll(ctx, timeout, "the enrollment request of "+name, func() (bool, error) {
			_, err := d.api.EnrollmentRequests.GetEnrollmentRequest(ctx,
				connect.NewRequest(&fleetplanev1.GetEnrollmentRequestRequest{Name: name}))
			return err == nil, nil
		})
		if err != nil {
			return err
		}
		labels := map[string]string{"fleet": "demo", "site": site}
		_, err = d.api.EnrollmentRequests.ApproveEnrollmentRequest(ctx,
			connect.NewRequest(&fleetplanev1.ApproveEnrollmentRequestRequest{
				Name: name, Approved: true, Labels: labels,
			}))
		if err != nil {
			return d.a.apiError("approve "+name, err)
		}
		d.printf("approved %s with labels fleet=demo, site=%s\n", name, site)
	}
	return nil
}

// applyFleet creates the example fleet.
func (d *demo) applyFleet(ctx context.Context) error {
	data, err := examples.Files.ReadFile("fleet.yaml")
	if err != nil {
		return err
	}
	docs, err := resourcefile.Parse("examples/fleet.yaml", data)
	if err != nil {
		return err
	}
	for _, doc := range docs {
		if _, err := d.api.Create(ctx, doc.Object); err != nil {
			return d.a.apiError("apply examples/fleet.yaml", err)
		}
	}
	d.printf("applied fleet/demo from examples/fleet.yaml\n")
	return nil
}

// changeTemplate adds a line to the fleet's config file, making a new template version.
func (d *demo) changeTemplate(ctx context.Context) error {
	resp, err := d.api.Fleets.GetFleet(ctx, connect.NewRequest(&fleetplanev1.GetFleetRequest{Name: "demo"}))
	if err != nil {
		return d.a.apiError("get fleet demo", err)
	}
	fleet := resp.Msg.GetFleet()
	file := fleet.GetSpec().GetTemplate().GetSpec().GetConfig()[0].GetInline()[0]
	d.marker = "Template changed at " + time.Now().UTC().Format(time.TimeOnly) + "."
	file.Content += d.marker + "\n"
	_, err = d.api.Fleets.UpdateFleet(ctx, connect.NewRequest(&fleetplanev1.UpdateFleetRequest{Fleet: fleet}))
	if err != nil {
		return d.a.apiError("update fleet demo", err)
	}
	d.printf("\nchanged the template of fleet/demo (%s)\n", file.GetPath())
	return nil
}

// waitConverged prints the devices' progress until every device runs the fleet's latest
// template version, has acknowledged its latest rendered version and has its files on disk.
func (d *demo) waitConverged(ctx context.Context, timeout time.Duration) error {
	start := time.Now()
	last := ""
	return poll(ctx, timeout, "the devices to converge", func() (bool, error) {
		lines, converged, err := d.progress(ctx)
		if err != nil {
			return false, err
		}
		if lines != last {
			d.printf("%s", lines)
			last = lines
		}
		if converged {
			d.printf("converged in %s\n", time.Since(start).Round(100*time.Millisecond))
		}
		return converged, nil
	})
}

// progress returns one line per device and whether all of them converged.
func (d *demo) progress(ctx context.Context) (string, bool, error) {
	fleetResp, err := d.api.Fleets.GetFleet(ctx, connect.NewRequest(&fleetplanev1.GetFleetRequest{Name: "demo"}))
	if err != nil {
		return "", false, nil
	}
	meta := fleetResp.Msg.GetFleet().GetMetadata()
	wantTemplate := fmt.Sprintf("%s-%d", meta.GetName(), meta.GetGeneration())
	var b strings.Builder
	all := true
	for i := range demoSites {
		name := fmt.Sprintf("demo-%d", i+1)
		state, ok := d.deviceState(ctx, name, wantTemplate)
		all = all && ok
		fmt.Fprintf(&b, "  %-7s %s\n", name, state)
	}
	return b.String(), all, nil
}

// deviceState describes one device's progress and reports whether it converged.
func (d *demo) deviceState(ctx context.Context, name, wantTemplate string) (string, bool) {
	devResp, err := d.api.Devices.GetDevice(ctx, connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: name}))
	if err != nil {
		return "waiting for the device", false
	}
	dev := devResp.Msg.GetDevice()
	template := dev.GetMetadata().GetAnnotations()["fleetplane.dev/template-version"]
	applied := dev.GetStatus().GetConfig().GetRenderedVersion()
	updated := dev.GetStatus().GetUpdated().GetStatus()
	state := fmt.Sprintf("owner=%-10s template=%-8s applied=%-3s updated=%-9s",
		dev.GetMetadata().GetOwner(), template, applied, updated)
	if template != wantTemplate {
		return state, false
	}
	rendered, err := d.api.GetRenderedDevice(ctx, name)
	if err != nil || rendered.GetRenderedVersion() != applied || updated != "UpToDate" {
		return state, false
	}
	root := filepath.Join(d.dir, "agents", name, "root")
	for _, f := range rendered.GetFiles() {
		onDisk, err := os.ReadFile(filepath.Join(root, f.GetPath()))
		if err != nil || !bytes.Equal(onDisk, f.GetContent()) || !bytes.Contains(onDisk, []byte(d.marker)) {
			return state + " files=pending", false
		}
	}
	return state + " files=on disk", true
}

// poll calls check every 500 ms until it reports done, returns an error, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, what string, check func() (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}
