package dispatcher

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetplane/fleetplane/store"
)

const instrumentationName = "fleetplane/dispatcher"

// instruments are created once per process against the global MeterProvider. The otel global
// provider forwards instruments created before SetMeterProvider, so package init order does not
// matter.
type instruments struct {
	duration          metric.Float64Histogram
	retries           metric.Int64Counter
	failures          metric.Int64Counter
	triggers          metric.Int64Counter
	triggersCoalesced metric.Int64Counter
	leaseChanges      metric.Int64Counter
	fencingRejections metric.Int64Counter
}

var (
	instrumentsOnce sync.Once
	inst            instruments

	// Process-wide trigger counts, because Trigger is a package function with no Dispatcher.
	triggerCount   atomic.Int64
	coalescedCount atomic.Int64
)

func metrics() *instruments {
	instrumentsOnce.Do(func() {
		meter := otel.Meter(instrumentationName)
		// Errors are ignored: the names are valid constants, and a metrics failure must not
		// stop tasks from running.
		inst.duration, _ = meter.Float64Histogram("fleetplane_task_duration_seconds",
			metric.WithDescription("Time a task handler ran, by task kind."),
			metric.WithUnit("s"))
		inst.retries, _ = meter.Int64Counter("fleetplane_task_retries_total",
			metric.WithDescription("Task runs that failed and were scheduled again."))
		inst.failures, _ = meter.Int64Counter("fleetplane_task_failures_total",
			metric.WithDescription("Tasks that failed permanently or used up their attempts."))
		inst.triggers, _ = meter.Int64Counter("fleetplane_task_triggers_total",
			metric.WithDescription("Calls to Trigger, by task kind."))
		inst.triggersCoalesced, _ = meter.Int64Counter("fleetplane_task_triggers_coalesced_total",
			metric.WithDescription("Triggers absorbed by a pending, failed or running task."))
		inst.leaseChanges, _ = meter.Int64Counter("fleetplane_shard_lease_changes_total",
			metric.WithDescription("Shard leases this process acquired, lost or released."))
		inst.fencingRejections, _ = meter.Int64Counter("fleetplane_fencing_rejections_total",
			metric.WithDescription("Task commits rejected because the shard lease was lost."))
	})
	return &inst
}

func kindAttr(kind string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("task_kind", kind))
}

// Stats are counters of one Dispatcher since New. Triggers and TriggersCoalesced count every
// Trigger call in the process, because Trigger has no Dispatcher.
type Stats struct {
	TasksRun          int64
	Triggers          int64
	TriggersCoalesced int64
	Retries           int64
	Failures          int64
	FencingRejections int64
	LeaseChanges      int64
}

type counters struct {
	tasksRun, retries, failures, fencingRejections, leaseChanges atomic.Int64
}

// Stats returns the dispatcher's counters.
func (d *Dispatcher) Stats() Stats {
	return Stats{
		TasksRun:          d.counts.tasksRun.Load(),
		Triggers:          triggerCount.Load(),
		TriggersCoalesced: coalescedCount.Load(),
		Retries:           d.counts.retries.Load(),
		Failures:          d.counts.failures.Load(),
		FencingRejections: d.counts.fencingRejections.Load(),
		LeaseChanges:      d.counts.leaseChanges.Load(),
	}
}

// depthCacheTTL bounds how often a metrics scrape queries the task counts.
const depthCacheTTL = 5 * time.Second

// registerQueueDepth registers the fleetplane_task_queue_depth gauge and returns a function
// that unregisters it.
func (d *Dispatcher) registerQueueDepth() func() {
	meter := otel.Meter(instrumentationName)
	gauge, err := meter.Int64ObservableGauge("fleetplane_task_queue_depth",
		metric.WithDescription("Tasks in the queue by kind and state, cached a few seconds."))
	if err != nil {
		d.log.Warn("queue depth gauge not registered", "err", err)
		return func() {}
	}
	var (
		mu      sync.Mutex
		counts  map[string]map[store.TaskState]int64
		countAt time.Time
	)
	reg, err := meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		mu.Lock()
		defer mu.Unlock()
		if counts == nil || time.Since(countAt) > depthCacheTTL {
			err := d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
				var err error
				counts, err = tx.CountTasks(ctx)
				return err
			})
			if err != nil {
				return err
			}
			countAt = time.Now()
		}
		for kind, byState := range counts {
			for state, n := range byState {
				o.ObserveInt64(gauge, n, metric.WithAttributes(
					attribute.String("task_kind", kind), attribute.String("state", string(state))))
			}
		}
		return nil
	}, gauge)
	if err != nil {
		d.log.Warn("queue depth gauge not registered", "err", err)
		return func() {}
	}
	return func() { _ = reg.Unregister() }
}
