package dispatcher

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Errorf("New without Store: err = %v, want one naming Store", err)
	}
	st := openStore(t, tempDB(t))
	_, err := New(Config{Store: st, Workers: -1})
	if err == nil || !strings.Contains(err.Error(), "Workers") {
		t.Errorf("New with Workers -1: err = %v, want one naming Workers", err)
	}
	_, err = New(Config{Store: st, BackoffBase: time.Second, BackoffMax: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "BackoffMax") {
		t.Errorf("New with BackoffMax < BackoffBase: err = %v, want one naming BackoffMax", err)
	}
}

func TestTriggerRejectsEmptyKey(t *testing.T) {
	st := openStore(t, tempDB(t))
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		return Trigger(ctx, tx, "render", "")
	})
	if !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("Trigger with empty key: err = %v, want ErrInvalidArgument", err)
	}
}

func TestCoalescePendingRunsOnce(t *testing.T) {
	st := openStore(t, tempDB(t))
	d := newDispatcher(t, testConfig(t, st, "r1"))
	ex := newExclusive()
	d.Register("render", func(ctx context.Context, key string) error {
		ex.enter(key)
		defer ex.exit(key)
		return nil
	})

	before := d.Stats().TriggersCoalesced
	for range 50 {
		trigger(t, st, "render", "dev-1")
	}
	if got := d.Stats().TriggersCoalesced - before; got != 49 {
		t.Errorf("coalesced triggers = %d, want 49", got)
	}
	start(t, d)

	waitFor(t, 5*time.Second, "task to run", func() bool { return ex.count("dev-1") > 0 })
	waitFor(t, 5*time.Second, "queue to drain", queueEmpty(t, st))
	if got := ex.count("dev-1"); got != 1 {
		t.Errorf("runs of dev-1 = %d, want 1", got)
	}
}

func TestCoalesceWhileRunningRerunsOnce(t *testing.T) {
	st := openStore(t, tempDB(t))
	d := newDispatcher(t, testConfig(t, st, "r1"))
	ex := newExclusive()
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	var runs atomic.Int64
	d.Register("render", func(ctx context.Context, key string) error {
		ex.enter(key)
		defer ex.exit(key)
		if runs.Add(1) == 1 {
			entered <- struct{}{}
			<-release
		}
		return nil
	})
	start(t, d)

	trigger(t, st, "render", "dev-1")
	<-entered
	for range 10 {
		trigger(t, st, "render", "dev-1")
	}
	close(release)

	waitFor(t, 5*time.Second, "queue to drain", queueEmpty(t, st))
	if got := ex.count("dev-1"); got != 2 {
		t.Errorf("runs of dev-1 = %d, want 2 (one run, one rerun)", got)
	}
	if n := ex.overlap.Load(); n != 0 {
		t.Errorf("dev-1 ran concurrently %d times", n)
	}
}

func TestManyKeysNeverOverlap(t *testing.T) {
	st := openStore(t, tempDB(t))
	d := newDispatcher(t, testConfig(t, st, "r1"))
	ex := newExclusive()
	d.Register("render", func(ctx context.Context, key string) error {
		ex.enter(key)
		defer ex.exit(key)
		return nil
	})
	start(t, d)

	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for range 20 {
		trigger(t, st, "render", keys...)
	}
	waitFor(t, 10*time.Second, "queue to drain", queueEmpty(t, st))
	if n := ex.overlap.Load(); n != 0 {
		t.Errorf("a key ran concurrently %d times", n)
	}
	for _, k := range keys {
		if ex.count(k) == 0 {
			t.Errorf("key %s never ran", k)
		}
	}
}

func TestRetryThenFail(t *testing.T) {
	st := openStore(t, tempDB(t))
	cfg := testConfig(t, st, "r1")
	var (
		mu       sync.Mutex
		failures []store.Task
	)
	cfg.OnFailure = func(ctx context.Context, task store.Task, err error) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, task)
	}
	d := newDispatcher(t, cfg)
	var runs atomic.Int64
	d.Register("sync", func(ctx context.Context, key string) error {
		runs.Add(1)
		return errTransient
	})
	start(t, d)
	trigger(t, st, "sync", "repo-1")

	waitFor(t, 5*time.Second, "task to fail", func() bool {
		tasks := listTasks(t, st)
		return len(tasks) == 1 && tasks[0].State == store.TaskFailed
	})
	task := listTasks(t, st)[0]
	if task.LastError != errTransient.Error() {
		t.Errorf("LastError = %q, want %q", task.LastError, errTransient.Error())
	}
	if got := runs.Load(); got != 3 {
		t.Errorf("runs = %d, want MaxAttempts 3", got)
	}
	stats := d.Stats()
	if stats.Retries != 2 {
		t.Errorf("Stats.Retries = %d, want 2", stats.Retries)
	}
	if stats.Failures != 1 {
		t.Errorf("Stats.Failures = %d, want 1", stats.Failures)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) != 1 || failures[0].Key != "repo-1" {
		t.Errorf("OnFailure calls = %+v, want one for repo-1", failures)
	}
}

func TestPermanentFailsAtOnce(t *testing.T) {
	st := openStore(t, tempDB(t))
	cfg := testConfig(t, st, "r1")
	var failed atomic.Int64
	cfg.OnFailure = func(ctx context.Context, task store.Task, err error) { failed.Add(1) }
	d := newDispatcher(t, cfg)
	var runs atomic.Int64
	d.Register("validate", func(ctx context.Context, key string) error {
		if runs.Add(1) == 1 {
			return Permanent(errors.New("template is invalid"))
		}
		return nil
	})
	start(t, d)
	trigger(t, st, "validate", "fleet-1")

	waitFor(t, 5*time.Second, "task to fail", func() bool {
		tasks := listTasks(t, st)
		return len(tasks) == 1 && tasks[0].State == store.TaskFailed
	})
	if got := runs.Load(); got != 1 {
		t.Errorf("runs before Failed = %d, want 1", got)
	}
	if got := failed.Load(); got != 1 {
		t.Errorf("OnFailure calls = %d, want 1", got)
	}

	// A new trigger revives the Failed task, and this time it succeeds.
	trigger(t, st, "validate", "fleet-1")
	waitFor(t, 5*time.Second, "revived task to finish", queueEmpty(t, st))
	if got := runs.Load(); got != 2 {
		t.Errorf("runs after revive = %d, want 2", got)
	}
}

func TestUnknownKindFails(t *testing.T) {
	st := openStore(t, tempDB(t))
	d := newDispatcher(t, testConfig(t, st, "r1"))
	start(t, d)
	trigger(t, st, "nobody-handles-this", "x")

	waitFor(t, 5*time.Second, "task to fail", func() bool {
		tasks := listTasks(t, st)
		return len(tasks) == 1 && tasks[0].State == store.TaskFailed
	})
	task := listTasks(t, st)[0]
	if !strings.Contains(task.LastError, `no handler is registered for task kind "nobody-handles-this"`) {
		t.Errorf("LastError = %q, want it to name the unregistered kind", task.LastError)
	}
}

func TestHandlerPanicFails(t *testing.T) {
	st := openStore(t, tempDB(t))
	d := newDispatcher(t, testConfig(t, st, "r1"))
	d.Register("boom", func(ctx context.Context, key string) error { panic("nil map") })
	start(t, d)
	trigger(t, st, "boom", "x")

	waitFor(t, 5*time.Second, "task to fail", func() bool {
		tasks := listTasks(t, st)
		return len(tasks) == 1 && tasks[0].State == store.TaskFailed
	})
	if got := listTasks(t, st)[0].LastError; !strings.Contains(got, "panicked") {
		t.Errorf("LastError = %q, want it to report the panic", got)
	}
}

func TestShutdownReleasesLeases(t *testing.T) {
	st := openStore(t, tempDB(t))
	d := newDispatcher(t, testConfig(t, st, "r1"))
	stop := start(t, d)
	waitFor(t, 5*time.Second, "all shards held", func() bool { return len(heldBy(t, st, "r1")) == testShards })
	stop()

	if held := heldBy(t, st, "r1"); len(held) != 0 {
		t.Errorf("after stop r1 still holds shards %v", held)
	}
	var replicas []store.Replica
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		replicas, err = tx.Replicas(ctx)
		return err
	})
	if err != nil {
		t.Fatalf("replicas: %v", err)
	}
	if len(replicas) != 0 {
		t.Errorf("after stop replicas = %+v, want none", replicas)
	}
}

// heldBy returns the shards whose lease owner is owner and has not expired.
func heldBy(t testing.TB, st store.Store, owner string) []int {
	t.Helper()
	var leases []store.Lease
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		leases, err = tx.Leases(ctx)
		return err
	})
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	var out []int
	now := time.Now()
	for _, l := range leases {
		if l.Owner == owner && l.ExpiresAt.After(now) {
			out = append(out, l.Shard)
		}
	}
	return out
}
