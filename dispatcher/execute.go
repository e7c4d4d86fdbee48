package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fleetplane/fleetplane/store"
)

// execute runs one claimed task under its shard's fence and records the outcome.
func (d *Dispatcher) execute(ctx context.Context, task store.Task, fence store.Fence) {
	defer func() {
		d.endInflight(fence)
		<-d.slots
		d.inflight.Done()
		d.Wake()
	}()
	ctx = store.WithFence(ctx, fence)
	ctx, span := otel.Tracer(instrumentationName).Start(ctx, "task "+task.Kind,
		trace.WithAttributes(attribute.String("task.kind", task.Kind),
			attribute.String("task.key", task.Key)))
	defer span.End()

	h, interval, ok := d.handler(task.Kind)
	var runErr error
	if !ok {
		runErr = Permanent(fmt.Errorf("no handler is registered for task kind %q", task.Kind))
	} else {
		start := time.Now()
		runErr = runHandler(ctx, h, task.Key)
		metrics().duration.Record(ctx, time.Since(start).Seconds(), kindAttr(task.Kind))
		d.counts.tasksRun.Add(1)
	}
	if runErr != nil {
		span.RecordError(runErr)
		span.SetStatus(codes.Error, "task failed")
	}

	if errors.Is(runErr, store.ErrFenced) {
		d.fenced(ctx, task, fence, runErr)
		return
	}
	if err := d.finish(ctx, task, interval, runErr); err != nil {
		if errors.Is(err, store.ErrFenced) {
			d.fenced(ctx, task, fence, err)
			return
		}
		// NOTE: the task stays Running until a new owner of the shard resets it.
		d.log.Error("record task outcome failed", "task_kind", task.Kind, "key", task.Key,
			"shard", task.Shard, "err", err)
	}
}

// runHandler calls h and turns a panic into a Permanent error, so one bad handler cannot stop
// the process or be retried in a loop.
func runHandler(ctx context.Context, h Handler, key string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Permanent(fmt.Errorf("handler panicked: %v", r))
		}
	}()
	return h(ctx, key)
}

// finish records the outcome of a run in one fenced transaction: the task is removed, scheduled
// for a retry or marked Failed, and a periodic task gets its next run at now+interval.
func (d *Dispatcher) finish(ctx context.Context, task store.Task, interval time.Duration,
	runErr error) error {
	if interval > 0 {
		return d.finishPeriodic(ctx, task, interval, runErr)
	}
	if runErr == nil {
		return d.inFencedTx(ctx, func(ctx context.Context, tx store.Tx) error {
			return tx.FinishTask(ctx, task.Kind, task.Key)
		})
	}

	attempt := task.Attempts + 1
	failed := isPermanent(runErr) || attempt >= d.cfg.MaxAttempts
	runAt := time.Now()
	if !failed {
		runAt = runAt.Add(backoff(attempt, d.cfg.BackoffBase, d.cfg.BackoffMax))
	}
	err := d.inFencedTx(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.RetryTask(ctx, task.Kind, task.Key, runAt, runErr.Error(), failed)
	})
	if err != nil {
		return err
	}
	if failed {
		task.Attempts = attempt
		task.LastError = runErr.Error()
		d.failed(ctx, task, runErr)
		return nil
	}
	d.counts.retries.Add(1)
	metrics().retries.Add(ctx, 1, kindAttr(task.Kind))
	d.log.Warn("task failed; will retry", "task_kind", task.Kind, "key", task.Key,
		"attempt", attempt, "run_at", runAt, "err", runErr)
	return nil
}

// finishPeriodic removes a periodic task and schedules its next run at now+interval, whether
// the run succeeded or not. A failed run is reported like a last attempt and is not retried
// before the next interval.
func (d *Dispatcher) finishPeriodic(ctx context.Context, task store.Task, interval time.Duration,
	runErr error) error {
	err := d.inFencedTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if err := tx.FinishTask(ctx, task.Kind, task.Key); err != nil {
			return err
		}
		_, err := tx.EnqueueTask(ctx, task.Kind, task.Key, time.Now().Add(interval))
		return err
	})
	if err != nil {
		return err
	}
	if runErr != nil {
		task.LastError = runErr.Error()
		d.failed(ctx, task, runErr)
	}
	return nil
}

// inFencedTx runs fn in a transaction that first checks the fence of ctx. InTx checks it again
// at commit, but checking first makes a lost lease fail with ErrFenced rather than with an
// error from fn about a task that the new owner already changed.
func (d *Dispatcher) inFencedTx(ctx context.Context,
	fn func(ctx context.Context, tx store.Tx) error) error {
	return d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if fence, ok := store.FenceFrom(ctx); ok {
			if err := tx.CheckLease(ctx, fence); err != nil {
				return err
			}
		}
		return fn(ctx, tx)
	})
}

// failed reports a task that will not run again until a new trigger.
func (d *Dispatcher) failed(ctx context.Context, task store.Task, err error) {
	d.counts.failures.Add(1)
	metrics().failures.Add(ctx, 1, kindAttr(task.Kind))
	d.log.Error("task failed", "task_kind", task.Kind, "key", task.Key,
		"attempts", task.Attempts, "permanent", isPermanent(err), "err", err)
	if d.cfg.OnFailure != nil {
		d.cfg.OnFailure(ctx, task, err)
	}
}

// fenced drops a task whose shard lease was lost. The new owner resets and runs it.
func (d *Dispatcher) fenced(ctx context.Context, task store.Task, fence store.Fence, err error) {
	d.counts.fencingRejections.Add(1)
	metrics().fencingRejections.Add(ctx, 1, kindAttr(task.Kind))
	d.log.Warn("task commit rejected by fencing; the new shard owner will run it",
		"task_kind", task.Kind, "key", task.Key, "shard", task.Shard, "err", err)
	d.markLost(task.Shard, fence.Epoch, "fenced commit")
}
