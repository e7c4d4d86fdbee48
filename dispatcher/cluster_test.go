package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// clusterConfig returns testConfig with a lease long enough that a loaded test machine renews
// it in time, because a missed renewal moves shards and reruns tasks.
func clusterConfig(t testing.TB, st store.Store, id string) Config {
	cfg := testConfig(t, st, id)
	cfg.LeaseDuration = 2 * time.Second
	return cfg
}

func TestTwoReplicasShareShards(t *testing.T) {
	path := tempDB(t)
	st1, st2 := openStore(t, path), openStore(t, path)
	ex := newExclusive()
	handler := func(ctx context.Context, key string) error {
		ex.enter(key)
		defer ex.exit(key)
		return nil
	}
	d1 := newDispatcher(t, clusterConfig(t, st1, "r1"))
	d2 := newDispatcher(t, clusterConfig(t, st2, "r2"))
	d1.Register("render", handler)
	d2.Register("render", handler)
	stop1 := start(t, d1)
	start(t, d2)

	want := Assign(testShards, []string{"r1", "r2"})
	var want1, want2 int
	for _, owner := range want {
		if owner == "r1" {
			want1++
		} else {
			want2++
		}
	}
	waitFor(t, 10*time.Second, "shards split by Assign", func() bool {
		return len(heldBy(t, st1, "r1")) == want1 && len(heldBy(t, st1, "r2")) == want2
	})

	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("dev-%d", i)
	}
	trigger(t, st1, "render", keys[:50]...)
	trigger(t, st2, "render", keys[50:]...)
	waitFor(t, 10*time.Second, "queue to drain", queueEmpty(t, st1))
	// A key runs a second time only when its shard was taken over mid-run (a renewal missed
	// on a stalled machine), and then the first run's commit is fenced. The fenced commit can
	// land after the queue is empty, so poll.
	waitFor(t, 10*time.Second, "extra runs to equal fencing rejections", func() bool {
		extra := int64(ex.total() - len(keys))
		return extra == d1.Stats().FencingRejections+d2.Stats().FencingRejections
	})
	for _, k := range keys {
		if ex.count(k) == 0 {
			t.Errorf("key %s never ran", k)
		}
	}
	if n := ex.overlap.Load(); n != 0 {
		t.Errorf("a key ran concurrently %d times", n)
	}
	if d1.Stats().TasksRun == 0 || d2.Stats().TasksRun == 0 {
		t.Errorf("tasks run: r1 %d, r2 %d; want both above zero",
			d1.Stats().TasksRun, d2.Stats().TasksRun)
	}

	// Stopping r1 releases its shards, and r2 takes all of them.
	stop1()
	waitFor(t, 10*time.Second, "r2 to hold every shard", func() bool {
		return len(heldBy(t, st2, "r2")) == testShards
	})
	trigger(t, st2, "render", "after-stop-1", "after-stop-2", "after-stop-3")
	waitFor(t, 10*time.Second, "queue to drain after handoff", queueEmpty(t, st2))
}

func TestFencingRejectsLostShard(t *testing.T) {
	st := openStore(t, tempDB(t))
	d := newDispatcher(t, testConfig(t, st, "r1"))
	entered := make(chan store.Fence, 1)
	proceed := make(chan struct{})
	var (
		runs     atomic.Int64
		writeErr error
	)
	d.Register("render", func(ctx context.Context, key string) error {
		if runs.Add(1) > 1 {
			return nil
		}
		fence, _ := store.FenceFrom(ctx)
		entered <- fence
		<-proceed
		writeErr = st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			_, err := tx.EnqueueTask(ctx, "marker", "written-by-fenced-run", time.Now())
			return err
		})
		return writeErr
	})
	start(t, d)
	trigger(t, st, "render", "dev-1")
	fence := <-entered

	// Another owner takes the lease: a "now" past the expiry makes the store treat r1's lease
	// as expired without waiting for it.
	var taken store.Lease
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		future := time.Now().Add(time.Minute)
		var err error
		taken, err = tx.AcquireLease(ctx, fence.Shard, "intruder", future, future.Add(time.Minute))
		return err
	})
	if err != nil {
		t.Fatalf("take lease: %v", err)
	}
	if taken.Epoch <= fence.Epoch {
		t.Fatalf("intruder epoch %d, want above %d", taken.Epoch, fence.Epoch)
	}
	close(proceed)

	waitFor(t, 5*time.Second, "fencing rejection", func() bool {
		return d.Stats().FencingRejections == 1
	})
	if !errors.Is(writeErr, store.ErrFenced) {
		t.Errorf("handler write under lost lease: err = %v, want ErrFenced", writeErr)
	}
	for _, task := range listTasks(t, st) {
		if task.Kind == "marker" {
			t.Errorf("the fenced run's write was committed: %+v", task)
		}
	}

	// The intruder hands the shard back; r1 takes it at a new epoch, resets the task and runs it.
	err = st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		return tx.ReleaseLease(ctx, fence.Shard, "intruder", taken.Epoch)
	})
	if err != nil {
		t.Fatalf("release lease: %v", err)
	}
	waitFor(t, 5*time.Second, "task to run again", queueEmpty(t, st))
	if got := runs.Load(); got != 2 {
		t.Errorf("runs = %d, want 2", got)
	}
}

func TestCrashedOwnerTaskRecovered(t *testing.T) {
	st := openStore(t, tempDB(t))
	key := "dev-crash"
	shard := store.ShardOf(key, testShards)

	// A replica that then dies claims the task: it is left Running under its lease.
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		now := time.Now()
		if _, err := tx.EnqueueTask(ctx, "render", key, now); err != nil {
			return err
		}
		if err := tx.Heartbeat(ctx, store.Replica{ID: "ghost", StartedAt: now, HeartbeatAt: now}); err != nil {
			return err
		}
		if _, err := tx.AcquireLease(ctx, shard, "ghost", now, now.Add(300*time.Millisecond)); err != nil {
			return err
		}
		claimed, err := tx.ClaimTasks(ctx, []int{shard}, now, 10)
		if err != nil {
			return err
		}
		if len(claimed) != 1 {
			return fmt.Errorf("claimed %d tasks, want 1", len(claimed))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("set up the dead replica's task: %v", err)
	}

	d := newDispatcher(t, testConfig(t, st, "r1"))
	var runs atomic.Int64
	d.Register("render", func(ctx context.Context, key string) error {
		runs.Add(1)
		return nil
	})
	start(t, d)

	waitFor(t, 10*time.Second, "the abandoned task to run", queueEmpty(t, st))
	if got := runs.Load(); got != 1 {
		t.Errorf("runs = %d, want 1", got)
	}
	held := heldBy(t, st, "r1")
	found := false
	for _, s := range held {
		found = found || s == shard
	}
	if !found {
		t.Errorf("r1 holds shards %v, want them to include %d", held, shard)
	}
}

func TestPeriodicRunsOnOneReplica(t *testing.T) {
	path := tempDB(t)
	const interval = 100 * time.Millisecond
	var (
		mu     sync.Mutex
		starts []time.Time
		by     = map[string]int{}
	)
	ex := newExclusive()
	periodic := func(id string) Handler {
		return func(ctx context.Context, key string) error {
			ex.enter(key)
			defer ex.exit(key)
			mu.Lock()
			defer mu.Unlock()
			starts = append(starts, time.Now())
			by[id]++
			return nil
		}
	}
	for _, id := range []string{"r1", "r2"} {
		d := newDispatcher(t, clusterConfig(t, openStore(t, path), id))
		d.RegisterPeriodic("status", interval, periodic(id))
		start(t, d)
	}

	waitFor(t, 10*time.Second, "six periodic runs", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(starts) >= 6
	})
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(starts); i++ {
		// The next run is enqueued at finish+interval, so starts are at least interval apart.
		// A second copy of the task, or a second replica running it, would break this.
		if gap := starts[i].Sub(starts[i-1]); gap < interval-10*time.Millisecond {
			t.Errorf("runs %d and %d are %v apart, want at least %v", i-1, i, gap, interval)
		}
	}
	if n := ex.overlap.Load(); n != 0 {
		t.Errorf("the periodic task ran concurrently %d times", n)
	}
	if len(by) == 0 {
		t.Error("no replica ran the periodic task")
	}
}

func TestDuplicateReplicaIDRefused(t *testing.T) {
	path := tempDB(t)
	st1, st2 := openStore(t, path), openStore(t, path)
	d1 := newDispatcher(t, clusterConfig(t, st1, "r1"))
	start(t, d1)
	waitFor(t, 10*time.Second, "r1 to hold every shard", func() bool {
		return len(heldBy(t, st1, "r1")) == testShards
	})

	d2 := newDispatcher(t, clusterConfig(t, st2, "r1"))
	err := d2.Run(context.Background())
	if !errors.Is(err, ErrReplicaIDInUse) {
		t.Fatalf("Run with the id of a live replica: error = %v; want ErrReplicaIDInUse", err)
	}
	if !strings.Contains(err.Error(), "another replica id") {
		t.Errorf("error %q does not say what to do", err)
	}
	if got := len(heldBy(t, st1, "r1")); got != testShards {
		t.Errorf("r1 holds %d shards after the refused start; want all %d", got, testShards)
	}
}

func TestLongDeadReplicaRemoved(t *testing.T) {
	st := openStore(t, tempDB(t))
	long := time.Now().Add(-time.Hour)
	recent := time.Now()
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		for id, at := range map[string]time.Time{"gone": long, "stopped-just-now": recent} {
			if err := tx.Heartbeat(ctx, store.Replica{ID: id, StartedAt: at, HeartbeatAt: at}); err != nil {
				return err
			}
		}
		return tx.OpenSessions(ctx, "gone", []string{"d1"}, long)
	})
	if err != nil {
		t.Fatal(err)
	}
	start(t, newDispatcher(t, testConfig(t, st, "r1")))

	ids := func() map[string]bool {
		out := map[string]bool{}
		err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
			replicas, err := tx.Replicas(ctx)
			for _, r := range replicas {
				out[r.ID] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	waitFor(t, 10*time.Second, "the long-dead replica to be removed", func() bool {
		return !ids()["gone"]
	})
	if got := ids(); !got["stopped-just-now"] || !got["r1"] {
		t.Errorf("replicas after the removal = %v; want r1 and stopped-just-now kept", got)
	}
	err = st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		holders, err := tx.SessionHolders(ctx, []string{"d1"})
		if len(holders) != 0 {
			t.Errorf("session holders after the removal = %v; want none", holders)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestExclusiveIDTakesOverOwnLeases(t *testing.T) {
	st := openStore(t, tempDB(t))
	ctx := context.Background()
	now := time.Now()
	key := keyInShard(t, 0)
	// An earlier process with id r1 died holding shard 0 with a task running.
	err := st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if err := tx.Heartbeat(ctx, store.Replica{ID: "r1", StartedAt: now, HeartbeatAt: now}); err != nil {
			return err
		}
		if _, err := tx.AcquireLease(ctx, 0, "r1", now, now.Add(time.Hour)); err != nil {
			return err
		}
		if _, err := tx.EnqueueTask(ctx, "render", key, now); err != nil {
			return err
		}
		_, err := tx.ClaimTasks(ctx, []int{0}, now, 1)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t, st, "r1")
	cfg.ExclusiveID = true
	d := newDispatcher(t, cfg)
	ran := make(chan string, 1)
	d.Register("render", func(_ context.Context, k string) error {
		ran <- k
		return nil
	})
	start(t, d)
	select {
	case got := <-ran:
		if got != key {
			t.Errorf("ran %q; want the interrupted task %q", got, key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the interrupted task did not run again within 10s")
	}
	err = st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		leases, err := tx.Leases(ctx)
		for _, l := range leases {
			if l.Shard == 0 && (l.Owner != "r1" || l.Epoch != 1) {
				t.Errorf("shard 0 lease = %+v; want r1's own lease renewed at epoch 1", l)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
