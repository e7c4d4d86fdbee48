package tasks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// workerStats counts what a testWorker did.
type workerStats struct {
	TasksRun  int64
	Triggers  int64
	Coalesced int64
}

// testWorker runs the tasks from the store's queue on a few goroutines until the test ends:
// it claims due tasks from every shard, runs them, finishes or retries them, and waits for
// the next commit. At start it resets tasks left running by a process that died.
//
// NOTE: the dispatcher package is not in the tree yet, so the end-to-end tests use this worker
// in its place. It has no leases or fencing.
type testWorker struct {
	st       store.Store
	handlers map[string]func(ctx context.Context, key string) error
	run      atomic.Int64

	mu   sync.Mutex
	errs []error
}

// triggerCounts counts the triggers and coalesced triggers since countTriggers was called.
var triggerCounts struct {
	triggers  atomic.Int64
	coalesced atomic.Int64
}

// countTriggers replaces the trigger function with one that counts into triggerCounts, until
// the test ends.
func countTriggers(t testing.TB) {
	previous := trigger
	trigger = func(ctx context.Context, tx store.Tx, kind, key string) error {
		coalesced, err := tx.EnqueueTask(ctx, kind, key, time.Now())
		if err == nil {
			triggerCounts.triggers.Add(1)
			if coalesced {
				triggerCounts.coalesced.Add(1)
			}
		}
		return err
	}
	t.Cleanup(func() { trigger = previous })
}

func startWorker(t testing.TB, st store.Store, deps Deps) func() workerStats {
	t.Helper()
	deps.Store = st
	w := &testWorker{st: st, handlers: newRunner(deps).handlers()}
	startTriggers, startCoalesced := triggerCounts.triggers.Load(), triggerCounts.coalesced.Load()

	ctx, cancel := context.WithCancel(context.Background())
	if err := w.resetRunning(ctx); err != nil {
		t.Fatalf("reset running tasks: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.loop(ctx, 4)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		for _, err := range w.errs {
			t.Errorf("test worker: %v", err)
		}
	})
	return func() workerStats {
		return workerStats{
			TasksRun:  w.run.Load(),
			Triggers:  triggerCounts.triggers.Load() - startTriggers,
			Coalesced: triggerCounts.coalesced.Load() - startCoalesced,
		}
	}
}

func (w *testWorker) resetRunning(ctx context.Context) error {
	return w.st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		for _, shard := range allShards() {
			if _, err := tx.ResetRunning(ctx, shard); err != nil {
				return err
			}
		}
		return nil
	})
}

func (w *testWorker) loop(ctx context.Context, workers int) {
	notify, unsubscribe := w.st.Subscribe()
	defer unsubscribe()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var claimed []store.Task
		err := w.st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			var err error
			claimed, err = tx.ClaimTasks(ctx, allShards(), time.Now(), workers)
			return err
		})
		if err == nil && len(claimed) > 0 {
			w.runAll(ctx, claimed)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-notify:
		case <-tick.C:
		}
	}
}

// runAll runs the claimed tasks at once and finishes or retries each.
func (w *testWorker) runAll(ctx context.Context, claimed []store.Task) {
	var wg sync.WaitGroup
	for _, task := range claimed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runErr := w.handlers[task.Kind](ctx, task.Key)
			if ctx.Err() != nil {
				return // left running, as after a crash
			}
			err := w.st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
				if runErr != nil {
					failed := task.Attempts >= 4
					return tx.RetryTask(ctx, task.Kind, task.Key, time.Now().Add(10*time.Millisecond), runErr.Error(), failed)
				}
				return tx.FinishTask(ctx, task.Kind, task.Key)
			})
			if err == nil && runErr == nil {
				w.run.Add(1)
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				w.mu.Lock()
				w.errs = append(w.errs, fmt.Errorf("finish task %s %s: %w", task.Kind, task.Key, err))
				w.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
