package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// membershipLoop runs a membership round every LeaseDuration/3 until ctx ends.
func (d *Dispatcher) membershipLoop(ctx context.Context, startedAt time.Time) {
	interval := d.cfg.LeaseDuration / 3
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if err := d.membershipRound(ctx, startedAt); err != nil && ctx.Err() == nil {
			d.log.Warn("membership round failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// membershipRound refreshes the heartbeat, computes the desired shards over the live replicas,
// acquires or renews them, and drains and releases the shards that moved away.
func (d *Dispatcher) membershipRound(ctx context.Context, startedAt time.Time) error {
	if err := d.heartbeat(ctx, startedAt); err != nil {
		return err
	}
	desired, err := d.desiredShards(ctx)
	if err != nil {
		return err
	}

	d.mu.Lock()
	for shard, held := range d.shards {
		held.draining = !desired[shard]
		if held.draining {
			desired[shard] = true // renew it until its running tasks finish
		}
	}
	d.mu.Unlock()

	for shard := range desired {
		if ctx.Err() != nil {
			return nil
		}
		d.acquire(ctx, shard)
	}
	d.releaseDrained(ctx)
	d.logHeldShards()
	d.Wake()
	return nil
}

// logHeldShards logs the number of held shards when it changed since the previous round; the
// single leases are logged at debug level.
func (d *Dispatcher) logHeldShards() {
	d.mu.Lock()
	held := len(d.shards)
	d.mu.Unlock()
	if held != d.loggedHeld {
		d.log.Info("shard leases changed", "held", held, "previously", d.loggedHeld)
		d.loggedHeld = held
	}
}

// ErrReplicaIDInUse is returned by Run when another live process has the same replica id.
var ErrReplicaIDInUse = errors.New("replica id in use")

// join writes the first heartbeat, unless a live process already uses this replica id: two
// processes with one id would hold the same leases at the same epochs, which fencing cannot
// tell apart.
func (d *Dispatcher) join(ctx context.Context, startedAt time.Time) error {
	now := time.Now()
	err := d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		replicas, err := tx.Replicas(ctx)
		if err != nil {
			return err
		}
		for _, r := range replicas {
			age := now.Sub(r.HeartbeatAt)
			if r.ID == d.cfg.ReplicaID && age < d.cfg.LeaseDuration && !d.cfg.ExclusiveID {
				return fmt.Errorf("%w: replica %s at %s sent a heartbeat %v ago; give this "+
					"process another replica id, or stop the other one (a replica that died "+
					"counts as gone %v after its last heartbeat)", ErrReplicaIDInUse, r.ID,
					r.Address, age.Round(time.Millisecond), d.cfg.LeaseDuration)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return d.heartbeat(ctx, startedAt)
}

func (d *Dispatcher) heartbeat(ctx context.Context, startedAt time.Time) error {
	replica := store.Replica{
		ID:          d.cfg.ReplicaID,
		Address:     d.cfg.Address,
		StartedAt:   startedAt,
		HeartbeatAt: time.Now(),
	}
	if d.cfg.ConnectedAgents != nil {
		replica.ConnectedAgents = int64(d.cfg.ConnectedAgents())
	}
	err := d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Heartbeat(ctx, replica)
	})
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// desiredShards returns the shards that Assign gives this replica among the live replicas.
func (d *Dispatcher) desiredShards(ctx context.Context) (map[int]bool, error) {
	var (
		shardCount int
		replicas   []store.Replica
	)
	err := d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		if shardCount, err = tx.ShardCount(ctx); err != nil {
			return err
		}
		replicas, err = tx.Replicas(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read membership: %w", err)
	}

	live := []string{d.cfg.ReplicaID}
	now := time.Now()
	cutoff := now.Add(-d.cfg.LeaseDuration)
	var dead []string
	for _, r := range replicas {
		switch {
		case r.HeartbeatAt.After(cutoff):
			live = append(live, r.ID)
		case r.HeartbeatAt.Before(now.Add(-deadReplicaRetention * d.cfg.LeaseDuration)):
			dead = append(dead, r.ID)
		}
	}
	d.removeDead(ctx, dead)

	desired := map[int]bool{}
	for shard, owner := range Assign(shardCount, live) {
		if owner == d.cfg.ReplicaID {
			desired[shard] = true
		}
	}
	return desired, nil
}

// deadReplicaRetention is how many lease durations a replica that stopped sending heartbeats
// stays listed, so that operators can see it went away, before a live replica removes its row
// and its session registry entries.
const deadReplicaRetention = 20

// removeDead deletes the membership rows and session registry entries of replicas that died
// long ago. A failure is logged and tried again at the next round.
func (d *Dispatcher) removeDead(ctx context.Context, dead []string) {
	for _, id := range dead {
		err := d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			if err := tx.CloseSessions(ctx, id, nil); err != nil {
				return err
			}
			return tx.RemoveReplica(ctx, id)
		})
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("remove dead replica failed", "dead_replica", id, "err", err)
			}
			continue
		}
		d.log.Info("removed replica without heartbeats", "dead_replica", id,
			"silent_for_at_least", deadReplicaRetention*d.cfg.LeaseDuration)
	}
}

// acquire takes or renews the lease of shard. On a new epoch it resets the shard's running
// tasks, which the previous owner may have left behind, before the shard becomes claimable.
func (d *Dispatcher) acquire(ctx context.Context, shard int) {
	now := time.Now()
	var lease store.Lease
	err := d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		lease, err = tx.AcquireLease(ctx, shard, d.cfg.ReplicaID, now, now.Add(d.cfg.LeaseDuration))
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		d.markLost(shard, -1, "lease held by another replica")
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("acquire lease failed", "shard", shard, "err", err)
		}
		return
	}

	d.mu.Lock()
	held, ok := d.shards[shard]
	if !ok || held.epoch != lease.Epoch {
		if ok {
			d.log.Warn("shard lease was lost and taken again", "shard", shard,
				"old_epoch", held.epoch, "epoch", lease.Epoch)
		}
		// A fresh entry: tasks still running under the old epoch are no longer counted, and
		// their commits will be fenced.
		held = &heldShard{epoch: lease.Epoch}
		d.shards[shard] = held
		d.countLeaseChange(ctx)
		d.log.Debug("shard lease acquired", "shard", shard, "epoch", lease.Epoch)
	}
	needsReset := !held.ready
	d.mu.Unlock()

	if needsReset {
		d.resetShard(ctx, shard, lease.Epoch)
	}
}

// resetShard makes the shard's running tasks pending again under a fence at the new epoch.
// NOTE: a task this replica still runs under an older epoch of the same shard is reset too. Its
// key may then run twice at once for a short time, and only the old run's commit is fenced.
func (d *Dispatcher) resetShard(ctx context.Context, shard int, epoch int64) {
	fence := store.Fence{Shard: shard, Owner: d.cfg.ReplicaID, Epoch: epoch}
	var n int64
	err := d.cfg.Store.InTx(store.WithFence(ctx, fence), func(ctx context.Context, tx store.Tx) error {
		var err error
		n, err = tx.ResetRunning(ctx, shard)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("reset running tasks failed", "shard", shard, "err", err)
		}
		return
	}
	if n > 0 {
		d.log.Info("running tasks of the previous owner reset", "shard", shard, "tasks", n)
	}
	d.mu.Lock()
	if held, ok := d.shards[shard]; ok && held.epoch == epoch {
		held.ready = true
	}
	d.mu.Unlock()
	d.Wake()
}

// releaseDrained releases the draining shards that have no running task.
func (d *Dispatcher) releaseDrained(ctx context.Context) {
	d.mu.Lock()
	var idle []store.Fence
	for shard, held := range d.shards {
		if held.draining && held.inflight == 0 {
			idle = append(idle, store.Fence{Shard: shard, Epoch: held.epoch})
			delete(d.shards, shard)
		}
	}
	d.mu.Unlock()
	for _, f := range idle {
		d.release(ctx, f.Shard, f.Epoch)
	}
}

func (d *Dispatcher) release(ctx context.Context, shard int, epoch int64) {
	err := d.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.ReleaseLease(ctx, shard, d.cfg.ReplicaID, epoch)
	})
	if err != nil {
		d.log.Warn("release lease failed; it will expire", "shard", shard, "err", err)
		return
	}
	d.countLeaseChange(ctx)
	d.log.Debug("shard lease released", "shard", shard, "epoch", epoch)
}

// markLost removes from the held set a shard that this replica no longer holds at epoch (any epoch when epoch is
// negative), so nothing more is claimed from it. Tasks still running there will have their
// commits fenced.
func (d *Dispatcher) markLost(shard int, epoch int64, reason string) {
	d.mu.Lock()
	held, ok := d.shards[shard]
	ok = ok && (epoch < 0 || held.epoch == epoch)
	if ok {
		delete(d.shards, shard)
	}
	d.mu.Unlock()
	if ok {
		d.countLeaseChange(context.Background())
		d.log.Warn("shard lease lost", "shard", shard, "reason", reason)
	}
}

func (d *Dispatcher) countLeaseChange(ctx context.Context) {
	d.counts.leaseChanges.Add(1)
	metrics().leaseChanges.Add(ctx, 1)
}
