package replicas

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/agent"
	"github.com/fleetplane/fleetplane/agent/simulate"
	"github.com/fleetplane/fleetplane/client/resourcefile"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

const fleetYAML = `
apiVersion: fleetplane.dev/v1
kind: Fleet
metadata:
  name: demo
spec:
  selector:
    matchLabels:
      fleet: demo
  template:
    metadata:
      labels:
        fleet: demo
    spec:
      config:
        - name: motd
          inline:
            - path: /etc/motd
              content: "{{ .metadata.name }} MARKER\n"
`

// startDevices runs perReplica simulated devices per replica, each trying the replicas' agent
// ports in a different order, so streams spread over all replicas. The devices report their
// status every second.
func startDevices(t testing.TB, c *cluster, perReplica int) []*simulate.Simulator {
	return startDevicesReporting(t, c, perReplica, time.Second)
}

// startDevicesReporting is startDevices with statusInterval between status reports.
func startDevicesReporting(t testing.TB, c *cluster, perReplica int,
	statusInterval time.Duration) []*simulate.Simulator {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var sims []*simulate.Simulator
	done := make(chan error, len(c.replicas))
	for i := range c.replicas {
		sim, err := simulate.New(simulate.Options{
			Count: perReplica, Server: c.agentURLs(i), CACertPEM: c.caPEM(),
			ApproveURL: c.replicas[0].apiURL, Labels: map[string]string{"fleet": "demo"},
			NamePrefix: fmt.Sprintf("dev-%d-", i), StatusInterval: statusInterval,
			Timing: agent.Timing{ReconnectMinDelay: 100 * time.Millisecond,
				ReconnectMaxDelay: time.Second},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		sims = append(sims, sim)
		go func() { done <- sim.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range sims {
			if err := <-done; err != nil {
				t.Errorf("simulated devices: %v", err)
			}
		}
	})
	return sims
}

// applyFleet creates or updates fleet demo through r's API with marker in its template.
func applyFleet(t testing.TB, r *replicaProcess, marker string) {
	t.Helper()
	docs, err := resourcefile.Parse("fleet.yaml", []byte(strings.ReplaceAll(fleetYAML, "MARKER", marker)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.api.Create(ctx, docs[0].Object); err == nil {
		return
	}
	fleet := docs[0].Object.(*fleetplanev1.Fleet)
	waitFor(t, 10*time.Second, "fleet update", func() (bool, string) {
		_, err := r.api.Update(ctx, fleet)
		return err == nil, fmt.Sprint(err)
	})
}

// waitConverged waits until every device of the simulators runs the fleet's latest template,
// with the rendered version applied and reported up to date, as read through r's API.
func waitConverged(t testing.TB, r *replicaProcess, sims []*simulate.Simulator, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	var names []string
	for _, s := range sims {
		names = append(names, s.Names()...)
	}
	waitFor(t, timeout, "every device to converge", func() (bool, string) {
		resp, err := r.api.Fleets.GetFleet(ctx, connect.NewRequest(&fleetplanev1.GetFleetRequest{Name: "demo"}))
		if err != nil {
			return false, err.Error()
		}
		want := fmt.Sprintf("demo-%d", resp.Msg.GetFleet().GetMetadata().GetGeneration())
		pending := 0
		for _, name := range names {
			if !deviceConverged(ctx, r, name, want) {
				pending++
			}
		}
		return pending == 0, fmt.Sprintf("%d of %d devices not at %s", pending, len(names), want)
	})
}

func deviceConverged(ctx context.Context, r *replicaProcess, name, wantTemplate string) bool {
	resp, err := r.api.Devices.GetDevice(ctx, connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: name}))
	if err != nil {
		return false
	}
	dev := resp.Msg.GetDevice()
	if dev.GetMetadata().GetAnnotations()["fleetplane.dev/template-version"] != wantTemplate {
		return false
	}
	rendered, err := r.api.GetRenderedDevice(ctx, name)
	if err != nil {
		return false
	}
	return dev.GetStatus().GetConfig().GetRenderedVersion() == rendered.GetRenderedVersion() &&
		dev.GetStatus().GetUpdated().GetStatus() == "UpToDate"
}

func TestReplicasConverge(t *testing.T) {
	c := newCluster(t, 3)
	sims := startDevices(t, c, 4)
	applyFleet(t, c.replicas[1], "first")
	waitConverged(t, c.replicas[2], sims, time.Minute)

	applyFleet(t, c.replicas[2], "second")
	waitConverged(t, c.replicas[0], sims, 30*time.Second)

	owned := c.leases(c.replicas[0])
	for _, r := range c.replicas {
		if owned[r.id] == 0 {
			t.Errorf("replica %s holds no shard; leases: %v", r.id, owned)
		}
	}
	// Heartbeats carry the stream counts, so wait for one round after convergence.
	waitFor(t, leaseDuration+5*time.Second, "connected_agents to count every device",
		func() (bool, string) {
			counts := c.connectedAgents(c.replicas[0])
			total := int64(0)
			for _, n := range counts {
				total += n
			}
			return total == 12, fmt.Sprint(counts)
		})
	// The session registry names the replica of every stream, in line with the heartbeats.
	waitFor(t, leaseDuration+5*time.Second, "the session registry to match connected_agents",
		func() (bool, string) {
			registry := c.sessionsPerReplica(c.replicas[1])
			counts := c.connectedAgents(c.replicas[0])
			total := 0
			for _, n := range registry {
				total += n
			}
			for id, n := range counts {
				if int64(registry[id]) != n {
					return false, fmt.Sprintf("registry %v, heartbeats %v", registry, counts)
				}
			}
			return total == 12, fmt.Sprintf("registry %v, heartbeats %v", registry, counts)
		})
	for _, name := range []string{"fleetplane_shard_lease_changes_total",
		"fleetplane_fencing_rejections_total", "fleetplane_store_tx_retries_total",
		"fleetplane_store_tx_commits_total"} {
		if _, ok := c.replicas[0].metric(t, name); !ok {
			t.Errorf("metrics of r1 have no %s", name)
		}
	}
}

func TestReplicaKilledDuringRollout(t *testing.T) {
	c := newCluster(t, 3)
	sims := startDevices(t, c, 4)
	applyFleet(t, c.replicas[0], "first")
	waitConverged(t, c.replicas[0], sims, time.Minute)

	applyFleet(t, c.replicas[1], "second")
	victim := c.replicas[2]
	victim.signal(t, syscall.SIGKILL)
	killed := time.Now()

	waitFor(t, leaseDuration+10*time.Second, "the killed replica's shards to move", func() (bool, string) {
		owned := c.leases(c.replicas[0])
		return owned[victim.id] == 0 && owned["r1"] > 0 && owned["r2"] > 0, fmt.Sprint(owned)
	})
	t.Logf("shards moved %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	waitConverged(t, c.replicas[0], sims, time.Minute)

	// The devices that streamed from the killed replica moved to the others.
	waitFor(t, 10*time.Second, "every device to be connected", func() (bool, string) {
		connected, total := 0, 0
		for _, s := range sims {
			p := s.Progress()
			connected, total = connected+p.Connected, total+p.Total
		}
		return connected == total, fmt.Sprintf("%d of %d connected", connected, total)
	})
	for _, r := range c.replicas[:2] {
		changes, _ := r.metric(t, "fleetplane_shard_lease_changes_total")
		if changes == 0 {
			t.Errorf("replica %s counted no lease change, want the takeover counted", r.id)
		}
	}
}

func TestReplicaPausedIsFenced(t *testing.T) {
	c := newCluster(t, 3)
	sims := startDevices(t, c, 3)
	applyFleet(t, c.replicas[0], "first")
	waitConverged(t, c.replicas[0], sims, time.Minute)

	paused := c.replicas[1]
	paused.signal(t, syscall.SIGSTOP)
	waitFor(t, leaseDuration+10*time.Second, "the paused replica's shards to move", func() (bool, string) {
		owned := c.leases(c.replicas[0])
		return owned[paused.id] == 0, fmt.Sprint(owned)
	})
	applyFleet(t, c.replicas[0], "while-paused")
	paused.signal(t, syscall.SIGCONT)

	waitFor(t, leaseDuration+10*time.Second, "the resumed replica to rejoin", func() (bool, string) {
		owned := c.leases(c.replicas[0])
		return owned[paused.id] > 0, fmt.Sprint(owned)
	})
	waitConverged(t, c.replicas[2], sims, time.Minute)

	// The resumed replica found its leases gone: its renewals failed or its commits were
	// fenced. Either way it logs the lost leases, and it counts each fenced commit.
	log := paused.log.String()
	if !strings.Contains(log, `msg="shard lease lost"`) {
		t.Errorf("replica %s logged no lost lease after SIGCONT:\n%s", paused.id, log)
	}
	fenced := strings.Count(log, "rejected by fencing")
	metric, _ := paused.metric(t, "fleetplane_fencing_rejections_total")
	if float64(fenced) != metric {
		t.Errorf("replica %s logged %d fenced commits but its metric counts %v", paused.id, fenced, metric)
	}
	// NOTE: a commit is fenced only when a task was in flight at SIGSTOP, which this test
	// does not arrange, so it checks that the count and the log agree rather than a number.
	t.Logf("fenced commits of the resumed replica: %d", fenced)
}

func TestFourthReplicaJoins(t *testing.T) {
	c := newCluster(t, 3)
	sims := startDevices(t, c, 3)
	before := c.waitSettled(t)
	c.start("r4")
	after := c.waitSettled(t)

	// Rendezvous assignment moves only the shards that r4 takes, about a quarter of them.
	moved := 0
	for shard, owner := range after {
		if owner != before[shard] {
			moved++
			if owner != "r4" {
				t.Errorf("shard %d moved from %s to %s, want moves only to r4", shard, before[shard], owner)
			}
		}
	}
	if moved < shardCount/8 || moved > shardCount/2 {
		t.Errorf("%d of %d shards moved, want about a quarter", moved, shardCount)
	}
	t.Logf("%d of %d shards moved to r4", moved, shardCount)

	applyFleet(t, c.replicas[3], "after-join")
	waitConverged(t, c.replicas[3], sims, time.Minute)
}

func TestReplicaWithOtherCARefused(t *testing.T) {
	c := newCluster(t, 1)
	cmd := exec.Command(binary, "serve", "--database", c.dsn, "--replica-id", "r2",
		"--listen", freeAddr(t), "--agent-listen", freeAddr(t), "--peer-listen", freeAddr(t),
		"--data-dir", t.TempDir(), "--pki-dir", t.TempDir())
	done := make(chan error, 1)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("serve with another CA exited 0; want an error")
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("serve with another CA still ran after 30s; want it to refuse to start:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "give every replica the same --pki-dir") {
		t.Errorf("output does not say to share the CA:\n%s", out.String())
	}
}
