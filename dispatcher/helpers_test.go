package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

const testShards = 8

func openStore(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path, sqlite.Options{ShardCount: testShards})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func tempDB(t testing.TB) string {
	return filepath.Join(t.TempDir(), "fleetplane.db")
}

// testConfig returns a config with short intervals for tests. Logs go to the test's output,
// which is shown when the test fails or runs with -v.
func testConfig(t testing.TB, st store.Store, id string) Config {
	return Config{
		Store:         st,
		ReplicaID:     id,
		Workers:       4,
		LeaseDuration: 600 * time.Millisecond,
		PollInterval:  20 * time.Millisecond,
		MaxAttempts:   3,
		BackoffBase:   time.Millisecond,
		BackoffMax:    5 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
}

func newDispatcher(t testing.TB, cfg Config) *Dispatcher {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// start runs d until the returned stop function is called or the test ends. stop waits for Run
// to return.
func start(t testing.TB, d *Dispatcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func trigger(t testing.TB, st store.Store, kind string, keys ...string) {
	t.Helper()
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		for _, key := range keys {
			if err := Trigger(ctx, tx, kind, key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("trigger %s %v: %v", kind, keys, err)
	}
}

// waitFor polls cond every 5ms until it is true or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for a result
	}
}

func listTasks(t testing.TB, st store.Store) []store.Task {
	t.Helper()
	var out []store.Task
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		out, _, err = tx.ListTasks(ctx, store.TaskFilter{Limit: 1000})
		return err
	})
	if err != nil {
		t.Fatalf("list tasks: %v", err)
	}
	return out
}

func queueEmpty(t testing.TB, st store.Store) func() bool {
	return func() bool { return len(listTasks(t, st)) == 0 }
}

// exclusive records handler runs per key and flags any key that runs twice at once.
type exclusive struct {
	mu      sync.Mutex
	running map[string]bool
	runs    map[string]int
	overlap atomic.Int64
}

func newExclusive() *exclusive {
	return &exclusive{running: map[string]bool{}, runs: map[string]int{}}
}

func (e *exclusive) enter(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running[key] {
		e.overlap.Add(1)
	}
	e.running[key] = true
	e.runs[key]++
}

func (e *exclusive) exit(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.running, key)
}

func (e *exclusive) count(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[key]
}

func (e *exclusive) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, r := range e.runs {
		n += r
	}
	return n
}

var errTransient = errors.New("transient failure")
