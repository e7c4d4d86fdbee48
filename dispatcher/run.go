package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// Run registers the replica, takes its share of the shards and runs their tasks until ctx
// ends. Then it stops claiming, waits up to one LeaseDuration for running tasks, releases its
// leases and removes its membership row, so other replicas take the shards over at once. It
// returns nil when ctx ends and an error only when the store fails at startup.
func (d *Dispatcher) Run(ctx context.Context) error {
	startedAt := time.Now()
	if err := d.join(ctx, startedAt); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("dispatcher start: %w", err)
	}
	if err := d.enqueuePeriodic(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("dispatcher start: %w", err)
	}
	// Export the rare counters at zero from the start, so that alerts on them see a series.
	metrics().fencingRejections.Add(ctx, 0)
	metrics().leaseChanges.Add(ctx, 0)
	metrics().failures.Add(ctx, 0)
	d.log.Info("dispatcher started", "workers", d.cfg.Workers,
		"lease_duration", d.cfg.LeaseDuration)
	unregister := d.registerQueueDepth()
	defer unregister()

	notify, cancelNotify := d.cfg.Store.Subscribe()
	defer cancelNotify()

	membershipDone := make(chan struct{})
	go func() {
		defer close(membershipDone)
		d.membershipLoop(ctx, startedAt)
	}()
	d.claimLoop(ctx, notify)
	<-membershipDone

	d.shutdown()
	return nil
}

// enqueuePeriodic schedules every periodic kind now unless it is already queued, because
// EnqueueTask coalesces with a task that exists.
func (d *Dispatcher) enqueuePeriodic(ctx context.Context) error {
	d.handlersMu.RLock()
	kinds := make([]string, 0, len(d.periodic))
	for kind := range d.periodic {
		kinds = append(kinds, kind)
	}
	d.handlersMu.RUnlock()
	if len(kinds) == 0 {
		return nil
	}
	return d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		for _, kind := range kinds {
			if err := enqueueIfAbsent(ctx, tx, kind); err != nil {
				return fmt.Errorf("enqueue periodic task %s: %w", kind, err)
			}
		}
		return nil
	})
}

// enqueueIfAbsent enqueues (kind, kind) now unless a task with that key exists. EnqueueTask
// alone would move an already scheduled next run forward to now.
func enqueueIfAbsent(ctx context.Context, tx store.Tx, kind string) error {
	filter := store.TaskFilter{Kind: kind, Limit: 1000}
	for {
		tasks, next, err := tx.ListTasks(ctx, filter)
		if err != nil {
			return err
		}
		for _, task := range tasks {
			if task.Key == kind {
				return nil
			}
		}
		if next == "" {
			break
		}
		filter.PageToken = next
	}
	_, err := tx.EnqueueTask(ctx, kind, kind, time.Now())
	return err
}

// claimLoop claims and starts due tasks whenever the store signals a commit, Wake is called or
// PollInterval passes, until ctx ends.
func (d *Dispatcher) claimLoop(ctx context.Context, notify <-chan struct{}) {
	ticker := time.NewTicker(d.cfg.PollInterval)
	defer ticker.Stop()
	for {
		for d.claimOnce(ctx) {
			// A full batch was claimed: look again before waiting.
		}
		select {
		case <-ctx.Done():
			return
		case <-notify:
		case <-d.wake:
		case <-ticker.C:
		}
	}
}

// claimOnce claims up to the number of free worker slots and starts the tasks. It returns true
// when it filled every free slot, so more tasks may be due.
func (d *Dispatcher) claimOnce(ctx context.Context) bool {
	free := cap(d.slots) - len(d.slots)
	if free == 0 || ctx.Err() != nil {
		return false
	}
	fences := d.claimableShards()
	if len(fences) == 0 {
		return false
	}
	var tasks []store.Task
	var err error
	// Each fenced shard found removes one shard and runs the claim again, so this ends.
	for {
		var fenced fencedShardError
		err = d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			var err error
			tasks, err = claimFenced(ctx, tx, fences, free)
			return err
		})
		if !errors.As(err, &fenced) {
			break
		}
		delete(fences, fenced.shard)
		if len(fences) == 0 {
			return false
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("claim tasks failed", "err", err)
		}
		return false
	}
	for _, task := range tasks {
		fence := fences[task.Shard]
		if !d.startInflight(fence) {
			// The shard changed hands after the claim; its new owner resets the task.
			continue
		}
		d.slots <- struct{}{}
		d.inflight.Add(1)
		go d.execute(context.WithoutCancel(ctx), task, fence)
	}
	return len(tasks) == free
}

// fencedShardError aborts a claim transaction that took a task from a shard whose lease is
// gone, so that no task of that shard is marked running.
type fencedShardError struct{ shard int }

func (e fencedShardError) Error() string {
	return fmt.Sprintf("shard %d: lease lost during the claim", e.shard)
}

// claimFenced claims tasks from the shards of fences and then checks, in the same transaction,
// the lease of every shard it took a task from. A lost lease returns fencedShardError, which
// rolls the claim back, so a claim never races with a takeover's ResetRunning. Checking only
// the shards of the claimed tasks keeps a claim to a few lease reads.
func claimFenced(ctx context.Context, tx store.Tx, fences map[int]store.Fence,
	limit int) ([]store.Task, error) {
	shards := make([]int, 0, len(fences))
	for shard := range fences {
		shards = append(shards, shard)
	}
	tasks, err := tx.ClaimTasks(ctx, shards, time.Now(), limit)
	if err != nil {
		return nil, err
	}
	checked := map[int]bool{}
	for _, task := range tasks {
		if checked[task.Shard] {
			continue
		}
		checked[task.Shard] = true
		err := tx.CheckLease(ctx, fences[task.Shard])
		if errors.Is(err, store.ErrFenced) {
			return nil, fencedShardError{shard: task.Shard}
		}
		if err != nil {
			return nil, err
		}
	}
	return tasks, nil
}

// claimableShards returns the fences of the held shards that are ready and not draining.
func (d *Dispatcher) claimableShards() map[int]store.Fence {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[int]store.Fence, len(d.shards))
	for shard, held := range d.shards {
		if held.ready && !held.draining {
			out[shard] = store.Fence{Shard: shard, Owner: d.cfg.ReplicaID, Epoch: held.epoch}
		}
	}
	return out
}

// startInflight counts a task as running on its shard if the shard is still held at the
// fence's epoch.
func (d *Dispatcher) startInflight(fence store.Fence) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	held, ok := d.shards[fence.Shard]
	if !ok || held.epoch != fence.Epoch {
		return false
	}
	held.inflight++
	return true
}

func (d *Dispatcher) endInflight(fence store.Fence) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if held, ok := d.shards[fence.Shard]; ok && held.epoch == fence.Epoch {
		held.inflight--
	}
}

// shutdown waits for running tasks for at most one LeaseDuration, then releases every lease
// and removes the replica's membership row.
func (d *Dispatcher) shutdown() {
	done := make(chan struct{})
	go func() {
		d.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d.cfg.LeaseDuration):
		// The leases are released anyway; the unfinished tasks' commits will be fenced.
		d.log.Warn("tasks still running at shutdown; releasing their shards anyway",
			"running", len(d.slots))
	}

	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.LeaseDuration)
	defer cancel()
	d.mu.Lock()
	held := d.shards
	d.shards = map[int]*heldShard{}
	d.mu.Unlock()
	for shard, h := range held {
		d.release(ctx, shard, h.epoch)
	}
	err := d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.RemoveReplica(ctx, d.cfg.ReplicaID)
	})
	if err != nil {
		d.log.Warn("remove replica failed", "err", err)
	}
	d.log.Info("dispatcher stopped", "released_shards", len(held))
}
