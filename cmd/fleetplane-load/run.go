package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// fleetName is the fleet that owns every simulated device.
const fleetName = "load"

// result contains the figures of one run.
type result struct {
	count int
	// Memory before the agents started, and with every agent connected after the first rollout.
	serverBase, serverConnected memory
	selfBase, selfConnected     memory
	// connectTime runs from starting the first agent to every agent applying the first spec.
	connectTime time.Duration
	// rollout is the per-device time from the template update call to the device's apply.
	rollout summary
	// reconnectFromKill and reconnectFromStart run from the SIGKILL and from starting the new
	// server process to every stream being back with every device at the latest version.
	reconnectFromKill, reconnectFromStart time.Duration
	// afterRestart is the rollout of a template change made after the restart.
	afterRestart summary
	// duplicates counts applies of a version or template change that a device already had.
	duplicates int
}

// loadRun is the state of one run: the server process, its API client and the agents.
type loadRun struct {
	cfg    config
	out    io.Writer
	server *serverProcess
	api    *client.Client
	devs   *devices
	res    result
}

// run performs every phase and prints the figures to out.
func run(ctx context.Context, cfg config, out io.Writer) (result, error) {
	limit, err := raiseOpenFileLimit()
	if err != nil {
		return result{}, err
	}
	// Each agent holds one connection in this process and one in the server.
	if need := uint64(cfg.count) + 256; limit < need {
		return result{}, fmt.Errorf("open file limit %d is below the %d that %d agents need; "+
			"raise the hard limit (ulimit -Hn) or lower --count", limit, need, cfg.count)
	}
	dir, cleanup, err := workDir(cfg.dir)
	if err != nil {
		return result{}, fmt.Errorf("work directory: %w", err)
	}
	defer cleanup()
	server, err := newServerProcess(cfg.serverBinary, cfg.serverFlags, dir)
	if err != nil {
		return result{}, err
	}
	r := &loadRun{cfg: cfg, out: out, server: server, api: client.New(server.apiURL())}
	r.res.count = cfg.count
	defer func() {
		if err := server.stop(30 * time.Second); err != nil {
			fmt.Fprintf(out, "server stopped with: %v\n", err)
		}
	}()
	if err := r.startServer(ctx); err != nil {
		return result{}, err
	}
	err = r.phases(ctx, dir)
	// A failed phase still leaves the figures of the phases before it.
	r.report()
	return r.res, err
}

// phases runs the agents and the measurements; the agents stop before it returns.
func (r *loadRun) phases(ctx context.Context, dir string) (err error) {
	if r.res.serverBase, err = r.server.memory(); err != nil {
		return err
	}
	if r.res.selfBase, err = selfMemory(); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(r.server.caFile())
	if err != nil {
		return fmt.Errorf("read server CA: %w", err)
	}
	logger, closeLog, err := agentLogger(dir)
	if err != nil {
		return err
	}
	defer closeLog()
	r.devs, err = newDevices(agentOptions{
		count: r.cfg.count, agentURL: r.server.agentURL(), caPEM: caPEM, api: r.api,
		statusInterval: r.cfg.statusInterval, timing: r.cfg.timing, logger: logger,
	})
	if err != nil {
		return err
	}
	first, err := r.createFleet(ctx)
	if err != nil {
		return err
	}

	agentCtx, stopAgents := context.WithCancel(ctx)
	started := time.Now()
	wait := r.devs.run(agentCtx, r.cfg.startInterval)
	defer func() {
		stopAgents()
		err = errors.Join(err, wait())
	}()
	fmt.Fprintf(r.out, "started %d agents in %s\n", r.cfg.count, roundMillis(time.Since(started)))
	if err := r.waitDevices(ctx, first, r.cfg.connectTimeout); err != nil {
		return err
	}
	r.res.connectTime = time.Since(started)
	fmt.Fprintf(r.out, "all %d agents enrolled, connected and applied the first spec in %s\n",
		r.cfg.count, roundMillis(r.res.connectTime))
	if err := r.measureMemory(); err != nil {
		return err
	}
	if r.res.rollout, err = r.rollout(ctx, "rollout"); err != nil {
		return err
	}
	// Measured again after the rollout, because the server has then run more garbage
	// collections with every agent connected, so its gctrace heap figure is current.
	if err := r.measureMemory(); err != nil {
		return err
	}
	if err := r.restart(ctx); err != nil {
		return err
	}
	if r.res.afterRestart, err = r.rollout(ctx, "rollout after restart"); err != nil {
		return err
	}
	r.res.duplicates = r.devs.duplicates()
	return nil
}

func (r *loadRun) startServer(ctx context.Context) error {
	if err := r.server.start(); err != nil {
		return err
	}
	return r.server.waitReady(ctx, r.api, time.Minute)
}

// createFleet creates the fleet that owns every simulated device and returns its marker.
func (r *loadRun) createFleet(ctx context.Context) (string, error) {
	marker := newMarker()
	r.devs.markers.set(marker)
	fleet := &fleetplanev1.Fleet{
		Metadata: &fleetplanev1.ObjectMeta{Name: fleetName},
		Spec: &fleetplanev1.FleetSpec{
			Selector: &fleetplanev1.LabelSelector{MatchLabels: map[string]string{"fleet": fleetName}},
			Template: &fleetplanev1.DeviceTemplate{
				Metadata: &fleetplanev1.ObjectMeta{Labels: map[string]string{"fleet": fleetName}},
				Spec: &fleetplanev1.DeviceSpec{Config: []*fleetplanev1.ConfigProviderSpec{{
					Name:   "load",
					Inline: []*fleetplanev1.FileSpec{{Path: "/etc/load.conf", Content: fileContent(marker)}},
				}}},
			},
		},
	}
	_, err := r.api.Fleets.CreateFleet(ctx, connect.NewRequest(&fleetplanev1.CreateFleetRequest{Fleet: fleet}))
	if err != nil {
		return "", fmt.Errorf("create fleet %s: %w", fleetName, err)
	}
	return marker, nil
}

// changeTemplate writes a new marker into the fleet's file and returns the marker and the
// time just before the update call.
func (r *loadRun) changeTemplate(ctx context.Context) (string, time.Time, error) {
	resp, err := r.api.Fleets.GetFleet(ctx, connect.NewRequest(&fleetplanev1.GetFleetRequest{Name: fleetName}))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("get fleet %s: %w", fleetName, err)
	}
	fleet := resp.Msg.GetFleet()
	marker := newMarker()
	fleet.GetSpec().GetTemplate().GetSpec().GetConfig()[0].GetInline()[0].Content = fileContent(marker)
	r.devs.markers.set(marker)
	start := time.Now()
	_, err = r.api.Fleets.UpdateFleet(ctx, connect.NewRequest(&fleetplanev1.UpdateFleetRequest{Fleet: fleet}))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("update fleet %s: %w", fleetName, err)
	}
	return marker, start, nil
}

// rollout changes the template and waits until every device applied it.
func (r *loadRun) rollout(ctx context.Context, name string) (summary, error) {
	marker, start, err := r.changeTemplate(ctx)
	if err != nil {
		return summary{}, err
	}
	if err := r.waitDevices(ctx, marker, r.cfg.phaseTimeout); err != nil {
		return summary{}, fmt.Errorf("%s: %w", name, err)
	}
	s := summarize(r.devs.latencies(marker, start))
	fmt.Fprintf(r.out, "%s: every device applied the new template; per device: %s\n", name, s)
	return s, nil
}

// restart kills the server, starts it again and waits until every stream is back and every
// device is at the latest version.
func (r *loadRun) restart(ctx context.Context) error {
	marker := r.devs.markers.get()
	killed := time.Now()
	if err := r.server.kill(); err != nil {
		return fmt.Errorf("kill server: %w", err)
	}
	fmt.Fprintf(r.out, "killed the server; agents still connected after the kill: %d\n",
		r.devs.progress(marker).connected)
	started := time.Now()
	if err := r.startServer(ctx); err != nil {
		return fmt.Errorf("restart server: %w", err)
	}
	if err := r.waitDevices(ctx, marker, r.cfg.phaseTimeout); err != nil {
		return fmt.Errorf("reconnect: %w", err)
	}
	r.res.reconnectFromKill = time.Since(killed)
	r.res.reconnectFromStart = time.Since(started)
	fmt.Fprintf(r.out, "every stream back at the latest version %s after the kill, %s after the new server started\n",
		roundMillis(r.res.reconnectFromKill), roundMillis(r.res.reconnectFromStart))
	return nil
}

// waitDevices waits until every agent holds a stream and applied marker, and the server counts
// every stream, printing progress every progress interval.
func (r *loadRun) waitDevices(ctx context.Context, marker string, timeout time.Duration) error {
	start := time.Now()
	lastPrint := start
	var last progress
	var serverCount int
	err := poll(ctx, timeout, 250*time.Millisecond, "every agent to connect and apply the template",
		func() (bool, error) {
			last = r.devs.progress(marker)
			if last.connected < last.total || last.atMarker < last.total {
				if time.Since(lastPrint) >= r.cfg.progressEvery {
					lastPrint = time.Now()
					fmt.Fprintf(r.out, "%6.0fs %s\n", time.Since(start).Seconds(), last)
				}
				return false, nil
			}
			n, err := r.server.connectedAgents(ctx)
			serverCount = n
			return err == nil && n >= last.total, nil
		})
	if err != nil {
		return fmt.Errorf("%w (%s; server counts %d streams)", err, last, serverCount)
	}
	return nil
}

// measureMemory records both processes' memory with every agent connected.
func (r *loadRun) measureMemory() (err error) {
	if r.res.serverConnected, err = r.server.memory(); err != nil {
		return err
	}
	r.res.selfConnected, err = selfMemory()
	return err
}

// report prints the figures of a finished run.
func (r *loadRun) report() {
	res := r.res
	if res.serverConnected.rss == 0 {
		fmt.Fprintf(r.out, "\nno figures: the agents did not all connect\n")
		return
	}
	srvRSS, srvHeap := res.serverConnected.perAgent(res.serverBase, res.count)
	simRSS, simHeap := res.selfConnected.perAgent(res.selfBase, res.count)
	fmt.Fprintf(r.out, "\nagents: %d\n", res.count)
	fmt.Fprintf(r.out, "server RSS: %s before agents, %s connected: %s per agent\n",
		mib(float64(res.serverBase.rss)), mib(float64(res.serverConnected.rss)), kib(srvRSS))
	fmt.Fprintf(r.out, "server live heap (gctrace): %s before agents, %s connected: %s per agent\n",
		mib(float64(res.serverBase.heap)), mib(float64(res.serverConnected.heap)), kib(srvHeap))
	fmt.Fprintf(r.out, "simulator RSS: %s per agent; heap in use: %s per agent\n", kib(simRSS), kib(simHeap))
	fmt.Fprintf(r.out, "enroll and connect: %s\n", roundMillis(res.connectTime))
	fmt.Fprintf(r.out, "template change to every ack: %s (per device %s)\n",
		roundMillis(res.rollout.max), res.rollout)
	fmt.Fprintf(r.out, "reconnect after SIGKILL: %s from the kill, %s from the new process start\n",
		roundMillis(res.reconnectFromKill), roundMillis(res.reconnectFromStart))
	fmt.Fprintf(r.out, "template change after restart: %s (per device %s)\n",
		roundMillis(res.afterRestart.max), res.afterRestart)
	fmt.Fprintf(r.out, "versions applied twice: %d\n", res.duplicates)
}

func newMarker() string { return fmt.Sprintf("change-%d", time.Now().UnixNano()) }

func fileContent(marker string) string {
	return "device {{ .metadata.name }}\nmarker " + marker + "\n"
}
