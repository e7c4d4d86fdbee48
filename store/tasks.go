package store

import (
	"context"
	"hash/fnv"
	"time"
)

// TaskState is where a task is in its life.
type TaskState string

// Task states.
const (
	TaskPending TaskState = "Pending"
	TaskRunning TaskState = "Running"
	// TaskFailed tasks used up their retries. They stay visible and run again only when a new
	// trigger arrives.
	TaskFailed TaskState = "Failed"
)

// Task is one row of the durable task queue: a kind and the key of the object it concerns.
type Task struct {
	Kind     string
	Key      string
	Shard    int
	State    TaskState
	Attempts int
	// Rerun is set when the task was triggered again while it ran.
	Rerun     bool
	LastError string
	RunAt     time.Time
	CreatedAt time.Time
}

// TaskFilter narrows ListTasks. Zero fields match everything.
type TaskFilter struct {
	Kind      string
	State     TaskState
	Limit     int
	PageToken string
}

// Lease is a replica's claim on one shard. Epoch increases each time the shard changes owner.
type Lease struct {
	Shard     int
	Owner     string
	Epoch     int64
	ExpiresAt time.Time
}

// Fence names the shard lease that a task runs under. See WithFence.
type Fence struct {
	Shard int
	Owner string
	Epoch int64
}

// Replica is a server process registered in the database.
type Replica struct {
	ID              string
	Address         string
	StartedAt       time.Time
	HeartbeatAt     time.Time
	ConnectedAgents int64
}

// TaskTx is the durable task queue, shard leases and replica membership.
type TaskTx interface {
	// EnqueueTask records that the task (kind, key) must run at or after runAt. A pending or
	// failed task with the same kind and key absorbs the trigger: it becomes pending at the
	// earlier of the two run times, and coalesced is true. A running task is marked to run once
	// more after it finishes, and coalesced is true as well.
	EnqueueTask(ctx context.Context, kind, key string, runAt time.Time) (coalesced bool, err error)
	// ClaimTasks marks up to limit pending tasks of the given shards whose run time is not after
	// now as running, and returns them oldest run time first.
	ClaimTasks(ctx context.Context, shards []int, now time.Time, limit int) ([]Task, error)
	// FinishTask removes a running task, or makes it pending again if it was re-triggered while
	// it ran.
	FinishTask(ctx context.Context, kind, key string) error
	// RetryTask makes a running task pending again at runAt with one more attempt and lastError.
	// With failed set it becomes Failed instead; a Failed task was re-triggered while running
	// becomes pending at runAt.
	RetryTask(ctx context.Context, kind, key string, runAt time.Time, lastError string, failed bool) error
	// ResetRunning makes the running tasks of a shard pending again, for a replica that has just
	// taken the shard over from one that may have died mid-task.
	ResetRunning(ctx context.Context, shard int) (int64, error)
	// ListTasks returns one page of tasks ordered by kind and key.
	ListTasks(ctx context.Context, filter TaskFilter) (tasks []Task, nextPageToken string, err error)
	// CountTasks returns the number of tasks by kind and state.
	CountTasks(ctx context.Context) (map[string]map[TaskState]int64, error)

	// ShardCount returns the number of shards, fixed when the database was created.
	ShardCount(ctx context.Context) (int, error)
	// Leases returns every shard lease.
	Leases(ctx context.Context) ([]Lease, error)
	// AcquireLease gives shard to owner until expires, when the lease is free, expired at now,
	// or already owner's. A new owner gets the next epoch; a renewal keeps the epoch. It returns
	// ErrConflict when another owner's lease has not expired.
	AcquireLease(ctx context.Context, shard int, owner string, now, expires time.Time) (Lease, error)
	// ReleaseLease frees shard if owner still holds it at epoch, so another replica can take it
	// without waiting for it to expire.
	ReleaseLease(ctx context.Context, shard int, owner string, epoch int64) error
	// CheckLease returns ErrFenced unless the fence's owner holds the shard at the fence's epoch.
	CheckLease(ctx context.Context, fence Fence) error

	// Heartbeat inserts or refreshes a replica's membership row.
	Heartbeat(ctx context.Context, replica Replica) error
	// Replicas returns every registered replica, including ones whose heartbeat is old.
	Replicas(ctx context.Context) ([]Replica, error)
	// RemoveReplica deletes a replica's membership row.
	RemoveReplica(ctx context.Context, id string) error

	// OpenSessions records that replica holds the agent streams of devices since at, in place
	// of any earlier holder.
	OpenSessions(ctx context.Context, replica string, devices []string, at time.Time) error
	// CloseSessions deletes the registry entries of devices that name replica. An entry that
	// names another replica, which took the stream over, stays. A nil devices deletes every
	// entry of replica.
	CloseSessions(ctx context.Context, replica string, devices []string) error
	// SessionHolders returns the replica holding the stream of each of devices that has one.
	SessionHolders(ctx context.Context, devices []string) (map[string]string, error)
	// InitSetting stores value under key unless key already has a value, and returns the
	// stored value. Replicas use it to agree on facts fixed when the database is first used.
	InitSetting(ctx context.Context, key, value string) (string, error)

	// ListSessions returns one page of the session registry in device name order.
	ListSessions(ctx context.Context, filter SessionFilter) (sessions []Session, nextPageToken string, err error)
}

// Session is a session registry entry: the replica that holds a device's agent stream.
type Session struct {
	Device   string
	Replica  string
	OpenedAt time.Time
}

// SessionFilter selects and pages the session registry. An empty Replica means every replica;
// Limit works as in ListOptions.
type SessionFilter struct {
	Replica   string
	Limit     int
	PageToken string
}

// DefaultShardCount is the number of shards a new database gets.
const DefaultShardCount = 64

// ShardOf returns the shard of a task key: FNV-1a (64 bit) of the key modulo shardCount.
func ShardOf(key string, shardCount int) int {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int(h.Sum64() % uint64(shardCount))
}

type fenceKey struct{}

// WithFence returns a context under which Store.InTx commits only if fence's lease still holds.
func WithFence(ctx context.Context, fence Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, fence)
}

// FenceFrom returns the fence set by WithFence, if any.
func FenceFrom(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok
}
