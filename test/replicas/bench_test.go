package replicas

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/tasks"
)

// benchDevices is the number of simulated devices of BenchmarkReplicas; the environment
// variable FLEETPLANE_BENCH_DEVICES overrides it.
const benchDevices = 300

// BenchmarkReplicas changes a fleet's template and waits until every device has applied the
// new version, with one and with three replica processes sharing one PostgreSQL. Each
// operation is one change. It reports the time of a fan-out, the tasks every replica ran per
// second meanwhile, and the share of store transactions that a serialization failure made
// run again.
func BenchmarkReplicas(b *testing.B) {
	devices := benchDevices
	if v := os.Getenv("FLEETPLANE_BENCH_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 3 {
			b.Fatalf("FLEETPLANE_BENCH_DEVICES=%q: want a whole number of at least 3", v)
		}
		devices = n
	}
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			benchmarkFanOut(b, replicas, devices)
		})
	}
}

func benchmarkFanOut(b *testing.B, replicas, devices int) {
	c := newCluster(b, replicas)
	devices -= devices % replicas
	// Status reports every ten minutes keep the periodic writes out of the figures.
	startDevicesReporting(b, c, devices/replicas, 10*time.Minute)
	applyFleet(b, c.replicas[0], "first")
	waitFanOut(b, c.replicas[0], devices, "demo-1", nil)

	before := c.counters(b)
	b.ResetTimer()
	for i := range b.N {
		versions := renderedVersions(b, c.replicas[0])
		applyFleet(b, c.replicas[i%replicas], fmt.Sprintf("change-%d", i))
		waitFanOut(b, c.replicas[0], devices, fmt.Sprintf("demo-%d", i+2), versions)
	}
	b.StopTimer()
	after := c.counters(b)

	elapsed := b.Elapsed().Seconds()
	ran := after.tasks - before.tasks
	retries := after.retries - before.retries
	attempts := after.commits - before.commits + retries
	b.ReportMetric(elapsed/float64(b.N), "s/fan-out")
	b.ReportMetric(ran/elapsed, "tasks/s")
	if attempts > 0 {
		b.ReportMetric(100*retries/attempts, "%retried")
	}
}

// counters are sums over every running replica of the /metrics figures BenchmarkReplicas
// reports.
type counters struct {
	tasks, commits, retries float64
}

func (c *cluster) counters(tb testing.TB) counters {
	tb.Helper()
	var sum counters
	for _, r := range c.replicas {
		n, _ := r.metric(tb, "fleetplane_task_duration_seconds_count")
		sum.tasks += n
		n, _ = r.metric(tb, "fleetplane_store_tx_commits_total")
		sum.commits += n
		n, _ = r.metric(tb, "fleetplane_store_tx_retries_total")
		sum.retries += n
	}
	return sum
}

// renderedVersions returns the rendered version each device of fleet demo reports applied.
func renderedVersions(tb testing.TB, r *replicaProcess) map[string]int64 {
	tb.Helper()
	versions := map[string]int64{}
	for _, d := range listDevices(tb, r) {
		v, _ := strconv.ParseInt(d.GetStatus().GetConfig().GetRenderedVersion(), 10, 64)
		versions[d.GetMetadata().GetName()] = v
	}
	return versions
}

// waitFanOut waits until want devices carry template version template and report a rendered
// version that is up to date and above the one in before.
func waitFanOut(tb testing.TB, r *replicaProcess, want int, template string,
	before map[string]int64) {
	tb.Helper()
	waitFor(tb, 5*time.Minute, "every device to apply "+template, func() (bool, string) {
		done := 0
		for _, d := range listDevices(tb, r) {
			v, _ := strconv.ParseInt(d.GetStatus().GetConfig().GetRenderedVersion(), 10, 64)
			if d.GetMetadata().GetAnnotations()[tasks.TemplateVersionAnnotation] == template &&
				d.GetStatus().GetUpdated().GetStatus() == "UpToDate" &&
				v > before[d.GetMetadata().GetName()] {
				done++
			}
		}
		return done == want, fmt.Sprintf("%d of %d devices", done, want)
	})
}

// listDevices returns every device labelled fleet=demo, read through r's API.
func listDevices(tb testing.TB, r *replicaProcess) []*fleetplanev1.Device {
	tb.Helper()
	var devices []*fleetplanev1.Device
	opts := &fleetplanev1.ListOptions{LabelSelector: "fleet=demo"}
	for {
		resp, err := r.api.Devices.ListDevices(context.Background(),
			connect.NewRequest(&fleetplanev1.ListDevicesRequest{Options: opts}))
		if err != nil {
			tb.Fatalf("list devices through replica %s: %v", r.id, err)
		}
		devices = append(devices, resp.Msg.GetDevices()...)
		if resp.Msg.GetNextPageToken() == "" {
			return devices
		}
		opts.PageToken = resp.Msg.GetNextPageToken()
	}
}
