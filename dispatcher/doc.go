// Package dispatcher runs the durable tasks of the store's task queue on a pool of workers,
// spread over the server replicas that share one database.
//
// # Outbox
//
// A task is a (kind, key) row, where the key names the object the task concerns. Code that
// changes the store calls Trigger inside the same transaction, so a committed change always has
// its task and a rolled-back change never does. A crash between commit and run loses nothing:
// the row waits in the queue.
//
// # Coalescing and rerun
//
// A trigger for a task that is already pending or failed is absorbed by it: the task runs once,
// at the earlier of the two run times. A trigger for a running task sets its rerun flag, and
// FinishTask makes it pending again, so the handler runs once more and reads every change
// made before that trigger. A run whose lease was taken over may also be repeated by the new owner
// (see Fencing). Handlers must therefore be idempotent and read current state rather
// than rely on what triggered them.
//
// # Shards and leases
//
// Each task belongs to shard store.ShardOf(key, S), where S is fixed when the database is
// created. Every LeaseDuration/3 a replica writes its heartbeat, computes Assign over the replicas
// whose heartbeat is younger than LeaseDuration (itself included), and acquires or renews the
// lease of each shard Assign gives it. Rendezvous hashing moves only about 1/N of the shards when
// a replica joins or leaves. A shard that moved away is drained: no new claims, then the lease is
// released once its running tasks end. Only the lease holder claims from a shard, and the claim
// transaction checks each lease, so the same key never runs twice at once (see the NOTE in
// resetShard for the one exception).
//
// # Fencing
//
// A task's handler runs with store.WithFence(ctx, Fence{shard, replica, epoch}), and its outcome
// is recorded in a transaction that checks the lease first and again at commit. A replica that lost its lease (paused, partitioned or slow
// to renew) commits nothing for that shard: the store returns store.ErrFenced, the dispatcher
// counts a fencing rejection, drops the task locally and forgets the shard.
//
// # Crash recovery
//
// When a replica dies, its heartbeat ages out, the others assign its shards among themselves and
// acquire the leases after they expire. A new epoch makes the new owner call ResetRunning, which
// turns the dead replica's running tasks back into pending ones before any claim.
//
// # Retries
//
// A handler error schedules the task again after a random delay in [0, min(BackoffMax,
// BackoffBase*2^(attempt-1))] ("full jitter"). After MaxAttempts, or at once for a Permanent
// error, a panic or an unknown kind, the task becomes Failed: it stays visible in ListTasks,
// OnFailure is called, the failure is logged and counted, and only a new trigger revives it.
//
// # Periodic tasks
//
// RegisterPeriodic kinds use their kind as key. Run enqueues each at startup (coalescing makes
// this idempotent across replicas), and the transaction that finishes a run enqueues the next one
// at now+interval, so exactly one replica, the shard's owner, runs each period. A failed periodic
// run is reported as a failure and waits for its next interval; it is never retried sooner.
//
// # Wake-ups
//
// The claim loop wakes on a commit signal from Store.Subscribe (commits in this process), on
// Wake, and every PollInterval. The poll is what finds work committed by other replicas.
//
// Trigger counts in Stats and in the trigger metrics include triggers whose transaction later
// rolled back.
package dispatcher
