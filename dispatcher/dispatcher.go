package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// Handler runs one task. It must be idempotent, because a task can run more than once. Every
// store transaction it opens with ctx is fenced by the task's shard lease.
type Handler func(ctx context.Context, key string) error

// Config configures a Dispatcher. Zero fields take the defaults given on each field.
type Config struct {
	Store     store.Store
	ReplicaID string // unique per process; default: random
	// ExclusiveID is the caller's guarantee that no other process uses ReplicaID, for example
	// through a lock on a data directory. Run then takes over the heartbeat and leases that an
	// earlier process with this id left, instead of refusing to start while they are recent.
	ExclusiveID   bool
	Address       string        // address at which other replicas reach this one; may be empty
	Workers       int           // default 2*GOMAXPROCS
	LeaseDuration time.Duration // default 15s; renew every third of it
	PollInterval  time.Duration // default 1s: fallback poll of owned shards
	MaxAttempts   int           // default 8, then the task is Failed
	BackoffBase   time.Duration // default 500ms; exponential with full jitter
	BackoffMax    time.Duration // default 5m
	Logger        *slog.Logger
	// ConnectedAgents, when set, returns the number of agent streams this process serves; each
	// heartbeat stores it in the replica's membership row.
	ConnectedAgents func() int
	// OnFailure is called after a task's last attempt, or after a Permanent error.
	OnFailure func(ctx context.Context, task store.Task, err error)
}

// Dispatcher runs the tasks of the shards this replica holds leases for.
type Dispatcher struct {
	cfg      Config
	log      *slog.Logger
	wake     chan struct{}
	slots    chan struct{} // one element per running task
	inflight sync.WaitGroup
	counts   counters

	handlersMu sync.RWMutex
	handlers   map[string]Handler
	periodic   map[string]time.Duration

	// mu guards shards.
	mu     sync.Mutex
	shards map[int]*heldShard

	// loggedHeld is the number of held shards that the last "shard leases changed" line
	// reported; only the membership goroutine uses it.
	loggedHeld int
}

// heldShard is a shard lease this replica holds.
type heldShard struct {
	epoch int64
	// ready is false after a new epoch until the previous owner's running tasks were reset.
	ready bool
	// draining is set when the shard moves to another replica: no new claims, release when idle.
	draining bool
	inflight int
}

// New validates cfg, fills in defaults and returns a Dispatcher that does nothing until Run.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Store == nil {
		return nil, errors.New("dispatcher config: Store is missing")
	}
	if err := checkNonNegative(cfg); err != nil {
		return nil, err
	}

	if cfg.ReplicaID == "" {
		cfg.ReplicaID = NewReplicaID()
	}
	cfg.Workers = orDefault(cfg.Workers, 2*runtime.GOMAXPROCS(0))
	cfg.LeaseDuration = orDefault(cfg.LeaseDuration, 15*time.Second)
	cfg.PollInterval = orDefault(cfg.PollInterval, time.Second)
	cfg.MaxAttempts = orDefault(cfg.MaxAttempts, 8)
	cfg.BackoffBase = orDefault(cfg.BackoffBase, 500*time.Millisecond)
	cfg.BackoffMax = orDefault(cfg.BackoffMax, 5*time.Minute)
	if cfg.BackoffMax < cfg.BackoffBase {
		return nil, fmt.Errorf("dispatcher config: BackoffMax %v is less than BackoffBase %v; "+
			"raise BackoffMax", cfg.BackoffMax, cfg.BackoffBase)
	}

	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Dispatcher{
		cfg:      cfg,
		log:      log.With("replica", cfg.ReplicaID),
		wake:     make(chan struct{}, 1),
		slots:    make(chan struct{}, cfg.Workers),
		handlers: map[string]Handler{},
		periodic: map[string]time.Duration{},
		shards:   map[int]*heldShard{},
	}, nil
}

func checkNonNegative(cfg Config) error {
	fields := []struct {
		name  string
		value int64
	}{
		{"Workers", int64(cfg.Workers)},
		{"LeaseDuration", int64(cfg.LeaseDuration)},
		{"PollInterval", int64(cfg.PollInterval)},
		{"MaxAttempts", int64(cfg.MaxAttempts)},
		{"BackoffBase", int64(cfg.BackoffBase)},
		{"BackoffMax", int64(cfg.BackoffMax)},
	}
	for _, f := range fields {
		if f.value < 0 {
			return fmt.Errorf("dispatcher config: %s is negative (%d); use zero for the default",
				f.name, f.value)
		}
	}
	return nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// NewReplicaID returns a random replica id, as used when Config.ReplicaID is empty.
func NewReplicaID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	return "replica-" + hex.EncodeToString(b)
}

// Register sets the handler of a task kind. Call it before Run.
func (d *Dispatcher) Register(kind string, h Handler) {
	d.handlersMu.Lock()
	defer d.handlersMu.Unlock()
	d.handlers[kind] = h
}

// RegisterPeriodic runs h every interval with key == kind, through the same sharded, fenced
// queue, so one replica at a time runs it. Call it before Run; interval must be positive.
func (d *Dispatcher) RegisterPeriodic(kind string, interval time.Duration, h Handler) {
	if interval <= 0 {
		panic(fmt.Sprintf("dispatcher: periodic task %q has interval %v; it must be positive",
			kind, interval))
	}
	d.handlersMu.Lock()
	defer d.handlersMu.Unlock()
	d.handlers[kind] = h
	d.periodic[kind] = interval
}

// Wake makes the claim loop look for due tasks now. It never blocks.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// ID returns the replica ID.
func (d *Dispatcher) ID() string { return d.cfg.ReplicaID }

// Trigger enqueues (kind, key) to run now inside the caller's transaction. A pending, failed or
// running task with the same kind and key absorbs it, which the coalesced-trigger metric counts.
func Trigger(ctx context.Context, tx store.Tx, kind, key string) error {
	if kind == "" || key == "" {
		return fmt.Errorf("trigger task: %w: kind %q and key %q must both be non-empty",
			store.ErrInvalidArgument, kind, key)
	}
	coalesced, err := tx.EnqueueTask(ctx, kind, key, time.Now())
	if err != nil {
		return fmt.Errorf("trigger task %s %q: %w", kind, key, err)
	}
	m := metrics()
	m.triggers.Add(ctx, 1, kindAttr(kind))
	triggerCount.Add(1)
	if coalesced {
		m.triggersCoalesced.Add(ctx, 1, kindAttr(kind))
		coalescedCount.Add(1)
	}
	return nil
}

func (d *Dispatcher) handler(kind string) (Handler, time.Duration, bool) {
	d.handlersMu.RLock()
	defer d.handlersMu.RUnlock()
	h, ok := d.handlers[kind]
	return h, d.periodic[kind], ok
}
