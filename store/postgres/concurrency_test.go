package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func createDevice(t testing.TB, s *Store, name string) store.Object {
	t.Helper()
	var out store.Object
	err := s.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		out, err = tx.Create(ctx, device(name))
		return err
	})
	if err != nil {
		t.Fatalf("Create %s: %v", name, err)
	}
	return out
}

func updateDevice(t testing.TB, s *Store, name, image string) store.Object {
	t.Helper()
	var out store.Object
	err := s.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		d := device(name)
		d.Spec.Os.Image = image
		var err error
		out, err = tx.Update(ctx, d)
		return err
	})
	if err != nil {
		t.Fatalf("Update %s: %v", name, err)
	}
	return out
}

func versionOf(t testing.TB, obj store.Object) int64 {
	t.Helper()
	v, err := strconv.ParseInt(store.Meta(obj).ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("resource_version %q: %v", store.Meta(obj).ResourceVersion, err)
	}
	return v
}

// TestTwoStoresOneWinner runs conflicting compare-and-swap updates through two stores with
// their own pools and version clocks, as two server replicas would.
func TestTwoStoresOneWinner(t *testing.T) {
	t.Parallel()
	first, dsn := openTemp(t, Options{})
	second := openStore(t, dsn, Options{})
	stores := []*Store{first, second}
	createDevice(t, first, "d1")

	const rounds = 30
	for round := range rounds {
		var current store.Object
		err := first.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
			var err error
			current, err = tx.Get(ctx, store.KindDevice, "d1")
			return err
		})
		if err != nil {
			t.Fatalf("round %d: Get: %v", round, err)
		}
		rv := store.Meta(current).ResourceVersion

		results := make([]store.Object, len(stores))
		errs := make([]error, len(stores))
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Go(func() {
				errs[i] = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
					d := device("d1")
					d.Spec.Os.Image = fmt.Sprintf("img-%d-%d", round, i)
					d.Metadata.ResourceVersion = rv
					var err error
					results[i], err = tx.Update(ctx, d)
					return err
				})
			})
		}
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner == -1:
				winner = i
			case err == nil:
				t.Fatalf("round %d: both updates of version %s succeeded", round, rv)
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("round %d: store %d: unexpected error %v", round, i, err)
			}
		}
		if winner == -1 {
			t.Fatalf("round %d: no update succeeded: %v", round, errs)
		}
		if versionOf(t, results[winner]) <= versionOf(t, current) {
			t.Errorf("round %d: new version %s is not above %s", round,
				store.Meta(results[winner]).ResourceVersion, rv)
		}
	}
}

// TestTwoStoresNoLostUpdate increments a counter by read-modify-write from many goroutines
// on two stores. SERIALIZABLE with retries must apply every increment.
func TestTwoStoresNoLostUpdate(t *testing.T) {
	t.Parallel()
	first, dsn := openTemp(t, Options{})
	second := openStore(t, dsn, Options{})
	createDevice(t, first, "counter")

	const workers, increments = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*increments)
	for _, s := range []*Store{first, second} {
		for range workers {
			wg.Go(func() {
				for range increments {
					errs <- s.InTx(t.Context(), increment)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("increment: %v", err)
		}
	}

	var final store.Object
	err := first.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		var err error
		final, err = tx.Get(ctx, store.KindDevice, "counter")
		return err
	})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	want := strconv.Itoa(2 * workers * increments)
	if got := store.Meta(final).Annotations["count"]; got != want {
		t.Errorf("count = %s; want %s", got, want)
	}
	if retries := first.Stats().Retries + second.Stats().Retries; retries == 0 {
		t.Logf("no transaction needed a retry; the workers did not overlap")
	}
}

func increment(ctx context.Context, tx store.Tx) error {
	obj, err := tx.Get(ctx, store.KindDevice, "counter")
	if err != nil {
		return err
	}
	m := store.Meta(obj)
	n, _ := strconv.Atoi(m.Annotations["count"])
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations["count"] = strconv.Itoa(n + 1)
	_, err = tx.Update(ctx, obj)
	return err
}

// TestSerializationFailureRetried makes two transactions read the same two devices and then
// each update a different one (write skew). PostgreSQL's serializable isolation aborts one
// of them with SQLSTATE 40001. InTx must retry it, so both succeed.
func TestSerializationFailureRetried(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	s, _ := openTemp(t, Options{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	createDevice(t, s, "a")
	createDevice(t, s, "b")

	var bothRead sync.WaitGroup
	bothRead.Add(2)
	var attempts atomic.Int64
	skew := func(write string) func(ctx context.Context, tx store.Tx) error {
		first := true
		return func(ctx context.Context, tx store.Tx) error {
			attempts.Add(1)
			for _, name := range []string{"a", "b"} {
				if _, err := tx.Get(ctx, store.KindDevice, name); err != nil {
					return err
				}
			}
			if first {
				// Only the first attempts overlap; a retry runs alone.
				first = false
				bothRead.Done()
				bothRead.Wait()
			}
			d := device(write)
			d.Spec.Os.Image = "written-by-" + write
			_, err := tx.Update(ctx, d)
			return err
		}
	}

	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"a", "b"} {
		wg.Go(func() { errs[i] = s.InTx(t.Context(), skew(name)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("transaction %d: %v", i, err)
		}
	}

	retries := s.Stats().Retries
	if retries < 1 {
		t.Errorf("Stats().Retries = %d; want at least 1", retries)
	}
	if got := attempts.Load(); got != 2+retries {
		t.Errorf("fn ran %d times; want 2 plus %d retries", got, retries)
	}
	if got := retryCounterValue(t, reader); got != retries {
		t.Errorf("retry counter = %d; want %d as in Stats", got, retries)
	}
	for _, name := range []string{"a", "b"} {
		var got store.Object
		err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
			var err error
			got, err = tx.Get(ctx, store.KindDevice, name)
			return err
		})
		if err != nil {
			t.Fatalf("Get %s: %v", name, err)
		}
		image := got.(*fleetplanev1.Device).GetSpec().GetOs().GetImage()
		if image != "written-by-"+name {
			t.Errorf("device %s image = %q; want written-by-%s", name, image, name)
		}
	}
}

// retryCounterValue returns the sum of the fleetplane.store.tx.retries counter.
func retryCounterValue(t *testing.T, reader *sdkmetric.ManualReader) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "fleetplane.store.tx.retries" {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				total += p.Value
			}
		}
	}
	return total
}

func TestContextCancelStopsTransaction(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Create(ctx, device("d1")); err != nil {
			return err
		}
		cancel()
		_, err := tx.Create(ctx, device("d2"))
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("InTx with a cancelled context: error = %v; want context.Canceled", err)
	}
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Get(ctx, store.KindDevice, "d1")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after a cancelled transaction: error = %v; want ErrNotFound", err)
	}
}

func TestVersionClockIncreases(t *testing.T) {
	c := newVersionClock(0)
	prev := int64(0)
	for i := range 10000 {
		v := c.next(0)
		if v <= prev {
			t.Fatalf("version %d at step %d is not above %d", v, i, prev)
		}
		if v&(1<<nodeBits-1) != c.node {
			t.Fatalf("version %d does not carry node id %d", v, c.node)
		}
		prev = v
	}
	ahead := (time.Since(versionEpoch) + time.Hour).Microseconds() << nodeBits
	if v := c.next(ahead); v <= ahead {
		t.Errorf("next(%d) = %d; want above the floor", ahead, v)
	}
	if v := c.next(0); v <= ahead {
		t.Errorf("next after a floor ahead of the clock = %d; want above %d", v, ahead)
	}
	if got := VersionTime(VersionsIn(time.Hour)).Sub(versionEpoch); got != time.Hour {
		t.Errorf("VersionTime(VersionsIn(1h)) is %v after the epoch; want 1h", got)
	}
}

func BenchmarkPostgresCreateDevice(b *testing.B) {
	s, _ := openTemp(b, Options{})
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			_, err := tx.Create(ctx, device(fmt.Sprintf("device-%07d", i)))
			return err
		})
		if err != nil {
			b.Fatalf("Create: %v", err)
		}
	}
}

func BenchmarkPostgresEnqueue(b *testing.B) {
	s, _ := openTemp(b, Options{})
	ctx := context.Background()
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			_, err := tx.EnqueueTask(ctx, "DeviceRenderTask", fmt.Sprintf("device-%07d", i), now)
			return err
		})
		if err != nil {
			b.Fatalf("EnqueueTask: %v", err)
		}
	}
}

// TestTwoStoresClaimEachTaskOnce lets two stores claim the same due tasks at once, as two
// replicas would right after a shard changed hands. No task may be claimed twice.
func TestTwoStoresClaimEachTaskOnce(t *testing.T) {
	t.Parallel()
	first, dsn := openTemp(t, Options{})
	second := openStore(t, dsn, Options{})
	const tasks = 60
	now := time.Now()
	err := first.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		for i := range tasks {
			if _, err := tx.EnqueueTask(ctx, "TestTask", fmt.Sprintf("k%02d", i), now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	shards := make([]int, store.DefaultShardCount)
	for i := range shards {
		shards[i] = i
	}

	var mu sync.Mutex
	claimed := map[string]int{}
	var wg sync.WaitGroup
	for _, s := range []*Store{first, second} {
		wg.Go(func() {
			for {
				var got []store.Task
				err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
					var err error
					got, err = tx.ClaimTasks(ctx, shards, now, 7)
					return err
				})
				if err != nil {
					t.Errorf("ClaimTasks: %v", err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, task := range got {
					claimed[task.Key]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	if len(claimed) != tasks {
		t.Errorf("%d distinct tasks claimed; want %d", len(claimed), tasks)
	}
	for key, n := range claimed {
		if n != 1 {
			t.Errorf("task %s claimed %d times; want once", key, n)
		}
	}
}

func TestPruneChangesKeepsNewest(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t, Options{})
	const total = MinChangesKept + 50
	// Change rows are inserted directly, because creating this many objects is slow.
	_, err := s.pool.Exec(t.Context(), `INSERT INTO changes
			(id, version, kind, name, type, object, created_at)
		SELECT gen_random_uuid(), i, 'Device', 'd' || i, 1, ''::BYTEA, 0
		FROM generate_series(1, $1::BIGINT) AS i`, total)
	if err != nil {
		t.Fatalf("insert changes: %v", err)
	}
	deleted, err := s.PruneChanges(t.Context(), 0)
	if err != nil {
		t.Fatalf("PruneChanges: %v", err)
	}
	if deleted != 50 {
		t.Errorf("PruneChanges deleted %d; want 50", deleted)
	}
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		changes, err := tx.Changes(ctx, "", 0, 1)
		if err == nil && (len(changes) != 1 || changes[0].Version != 51) {
			t.Errorf("oldest change after pruning = %v; want version 51", changes)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	if _, err := s.PruneChanges(t.Context(), -time.Second); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("PruneChanges with a negative age: error = %v; want ErrInvalidArgument", err)
	}
}

// TestDeadlockRetried makes two transactions update the same two devices in opposite orders.
// PostgreSQL aborts one of them with deadlock_detected after deadlock_timeout (1s by
// default), and InTx must run it again.
func TestDeadlockRetried(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t, Options{})
	createDevice(t, s, "a")
	createDevice(t, s, "b")

	var bothLocked sync.WaitGroup
	bothLocked.Add(2)
	inOrder := func(names ...string) func(ctx context.Context, tx store.Tx) error {
		first := true
		return func(ctx context.Context, tx store.Tx) error {
			for i, name := range names {
				d := device(name)
				d.Spec.Os.Image = "by-" + names[0]
				if _, err := tx.Update(ctx, d); err != nil {
					return err
				}
				if i == 0 && first {
					// Only the first attempts overlap; a retry runs alone.
					first = false
					bothLocked.Done()
					bothLocked.Wait()
				}
			}
			return nil
		}
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = s.InTx(t.Context(), inOrder("a", "b")) })
	wg.Go(func() { errs[1] = s.InTx(t.Context(), inOrder("b", "a")) })
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("transaction %d: %v", i, err)
		}
	}
	if retries := s.Stats().Retries; retries < 1 {
		t.Errorf("Stats().Retries = %d; want at least 1", retries)
	}
}

func TestStalledTransactionReleasesLocks(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t, Options{IdleInTransactionTimeout: 300 * time.Millisecond})
	ctx := t.Context()
	err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Create(ctx, device("d1"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// The first transaction locks d1's row and then stalls, as in a paused process, until the
	// second one has finished.
	locked := make(chan struct{}, 1)
	release := make(chan struct{})
	stalled := make(chan error, 1)
	go func() {
		stalled <- s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			if _, err := tx.Delete(ctx, store.KindDevice, "d1"); err != nil {
				return err
			}
			select {
			case locked <- struct{}{}:
			default:
			}
			<-release
			return nil
		})
	}()
	<-locked
	err = s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Delete(ctx, store.KindDevice, "d1")
		return err
	})
	close(release)
	if err != nil {
		t.Errorf("delete while another session stalled holding the row: %v; want it to go "+
			"through once the server ended the stalled session", err)
	}
	if err := <-stalled; err == nil {
		t.Error("the stalled transaction committed; want it to fail after its session ended")
	}
}
