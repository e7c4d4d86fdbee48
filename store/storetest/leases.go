package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

func acquire(s store.Store, t *testing.T, shard int, owner string, now time.Time) (store.Lease, error) {
	t.Helper()
	var l store.Lease
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		var err error
		l, err = tx.AcquireLease(ctx, shard, owner, now, now.Add(10*time.Second))
		return err
	})
	return l, err
}

func mustAcquire(s store.Store, t *testing.T, shard int, owner string, now time.Time) store.Lease {
	t.Helper()
	l, err := acquire(s, t, shard, owner, now)
	if err != nil {
		t.Fatalf("AcquireLease shard %d for %s: %v", shard, owner, err)
	}
	return l
}

func leases(t *testing.T, s store.Store) []store.Lease {
	t.Helper()
	var out []store.Lease
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		out, err = tx.Leases(ctx)
		return err
	})
	return out
}

func testLeaseEpochs(t *testing.T, open Opener) {
	s := open(t, nil)
	now := testNow()

	first := mustAcquire(s, t, 3, "r1", now)
	if first.Epoch != 1 || first.Owner != "r1" {
		t.Errorf("first lease = %+v; want r1 at epoch 1", first)
	}
	renewed := mustAcquire(s, t, 3, "r1", now.Add(5*time.Second))
	if renewed.Epoch != first.Epoch {
		t.Errorf("renewal changed epoch from %d to %d", first.Epoch, renewed.Epoch)
	}
	if !renewed.ExpiresAt.Equal(now.Add(15 * time.Second)) {
		t.Errorf("renewed lease expires at %v; want %v", renewed.ExpiresAt, now.Add(15*time.Second))
	}
	_, err := acquire(s, t, 3, "r2", now.Add(14*time.Second))
	wantErr(t, err, store.ErrConflict, "AcquireLease of a held lease")

	takenOver := mustAcquire(s, t, 3, "r2", now.Add(16*time.Second))
	if takenOver.Epoch != first.Epoch+1 || takenOver.Owner != "r2" {
		t.Errorf("lease after expiry = %+v; want r2 at epoch %d", takenOver, first.Epoch+1)
	}
	got := leases(t, s)
	want := []store.Lease{takenOver}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("Leases (-want +got):\n%s", diff)
	}

	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.ReleaseLease(ctx, 3, "r1", first.Epoch)
	})
	if got := leases(t, s); len(got) != 1 || got[0].Owner != "r2" {
		t.Errorf("a stale release freed the lease: %v", got)
	}
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.ReleaseLease(ctx, 3, "r2", takenOver.Epoch)
	})
	if got := leases(t, s); len(got) != 0 {
		t.Errorf("Leases after release = %v; want none", got)
	}
	again := mustAcquire(s, t, 3, "r2", now.Add(17*time.Second))
	if again.Epoch != takenOver.Epoch+1 {
		t.Errorf("epoch after release and acquire = %d; want %d", again.Epoch, takenOver.Epoch+1)
	}
}

func testLeaseInvalidShard(t *testing.T, open Opener) {
	s := open(t, nil)
	n := len(allShards(t, s))
	for _, shard := range []int{-1, n} {
		_, err := acquire(s, t, shard, "r1", time.Now())
		wantErr(t, err, store.ErrInvalidArgument, "AcquireLease of an out-of-range shard")
	}
}

func testFence(t *testing.T, open Opener) {
	s := open(t, nil)
	now := testNow()
	old := mustAcquire(s, t, 1, "r1", now)
	current := mustAcquire(s, t, 1, "r2", now.Add(time.Minute))

	stale := store.WithFence(t.Context(), store.Fence{Shard: 1, Owner: "r1", Epoch: old.Epoch})
	err := s.InTx(stale, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Create(ctx, device("fenced", nil, "img")); err != nil {
			return err
		}
		_, err := tx.EnqueueTask(ctx, testKind, "fenced", now)
		return err
	})
	wantErr(t, err, store.ErrFenced, "InTx under a stale fence")
	_, err = get(t, s, store.KindDevice, "fenced")
	wantErr(t, err, store.ErrNotFound, "Get of a device written under a stale fence")
	if tasks := listTasks(t, s, store.TaskFilter{}); len(tasks) != 0 {
		t.Errorf("tasks written under a stale fence: %v", tasks)
	}

	valid := store.WithFence(t.Context(), store.Fence{Shard: 1, Owner: "r2", Epoch: current.Epoch})
	err = s.InTx(valid, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Create(ctx, device("allowed", nil, "img"))
		return err
	})
	if err != nil {
		t.Fatalf("InTx under the current fence: %v", err)
	}
	mustGet(t, s, store.KindDevice, "allowed")

	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		return tx.CheckLease(ctx, store.Fence{Shard: 2, Owner: "r2", Epoch: 1})
	})
	wantErr(t, err, store.ErrFenced, "CheckLease of a shard never leased")
}

func testReplicas(t *testing.T, open Opener) {
	s := open(t, nil)
	start := testNow().Add(-time.Minute)
	r1 := store.Replica{ID: "r1", Address: "127.0.0.1:7001", StartedAt: start,
		HeartbeatAt: start, ConnectedAgents: 3}
	r2 := store.Replica{ID: "r2", Address: "127.0.0.1:7002", StartedAt: start, HeartbeatAt: start}
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.Heartbeat(ctx, r1); err != nil {
			return err
		}
		return tx.Heartbeat(ctx, r2)
	})
	r1.HeartbeatAt, r1.ConnectedAgents = start.Add(30*time.Second), 7
	inTx(t, s, func(ctx context.Context, tx store.Tx) error { return tx.Heartbeat(ctx, r1) })

	var got []store.Replica
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		got, err = tx.Replicas(ctx)
		return err
	})
	timeEqual := cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })
	if diff := cmp.Diff([]store.Replica{r1, r2}, got, timeEqual); diff != "" {
		t.Errorf("Replicas (-want +got):\n%s", diff)
	}
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.RemoveReplica(ctx, "r1"); err != nil {
			return err
		}
		got, err := tx.Replicas(ctx)
		if len(got) != 1 || got[0].ID != "r2" {
			t.Errorf("Replicas after RemoveReplica = %v; want only r2", got)
		}
		return err
	})
}

func testShardCount(t *testing.T, open Opener) {
	s := open(t, nil)
	shards := allShards(t, s)
	if len(shards) == 0 {
		t.Fatalf("ShardCount = 0")
	}
	enqueue(t, s, testKind, "device-42", time.Now())
	task := oneTask(t, s, "device-42")
	if want := store.ShardOf("device-42", len(shards)); task.Shard != want {
		t.Errorf("task shard = %d; want ShardOf = %d", task.Shard, want)
	}
}

func testRendered(t *testing.T, open Opener) {
	s := open(t, nil)
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.GetRendered(ctx, "d1")
		return err
	})
	wantErr(t, err, store.ErrNotFound, "GetRendered before any render")

	put := func(hash, image string) (int64, bool) {
		t.Helper()
		var v int64
		var changed bool
		inTx(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			v, changed, err = tx.PutRendered(ctx, "d1", &fleetplanev1.RenderedDeviceSpec{
				ContentHash: hash, Os: &fleetplanev1.DeviceOsSpec{Image: image}})
			return err
		})
		return v, changed
	}
	steps := []struct {
		hash, image string
		version     int64
		changed     bool
	}{
		{"h1", "img-1", 1, true},
		{"h1", "img-1", 1, false},
		{"h2", "img-2", 2, true},
		{"h2", "img-2", 2, false},
	}
	for i, st := range steps {
		v, changed := put(st.hash, st.image)
		if v != st.version || changed != st.changed {
			t.Errorf("step %d: PutRendered(%s) = %d, %v; want %d, %v",
				i, st.hash, v, changed, st.version, st.changed)
		}
	}
	var got *fleetplanev1.RenderedDeviceSpec
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		got, err = tx.GetRendered(ctx, "d1")
		return err
	})
	if got.RenderedVersion != "2" || got.ContentHash != "h2" || got.GetOs().GetImage() != "img-2" {
		t.Errorf("GetRendered = version %q hash %q image %q; want 2 h2 img-2",
			got.RenderedVersion, got.ContentHash, got.GetOs().GetImage())
	}
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, _, err := tx.PutRendered(ctx, "d1", &fleetplanev1.RenderedDeviceSpec{})
		return err
	})
	wantErr(t, err, store.ErrInvalidArgument, "PutRendered without a content hash")

	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.DeleteRendered(ctx, "d1")
	})
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.GetRendered(ctx, "d1")
		return err
	})
	wantErr(t, err, store.ErrNotFound, "GetRendered after DeleteRendered")
	// The version goes on from the deleted one, so an agent that kept version 2 takes the new
	// spec. The same hash as before the deletion is a change, because nothing is stored.
	if v, changed := put("h2", "img-2"); v != 3 || !changed {
		t.Errorf("PutRendered after DeleteRendered = %d, %v; want 3, true", v, changed)
	}
}

func testSessions(t *testing.T, open Opener) {
	s := open(t, nil)
	at := testNow()
	holders := func(devices ...string) map[string]string {
		t.Helper()
		var got map[string]string
		inTx(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			got, err = tx.SessionHolders(ctx, devices)
			return err
		})
		return got
	}
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.OpenSessions(ctx, "r1", []string{"d1", "d2", "d3"}, at); err != nil {
			return err
		}
		// d2's stream moved to r2.
		return tx.OpenSessions(ctx, "r2", []string{"d2"}, at.Add(time.Second))
	})
	want := map[string]string{"d1": "r1", "d2": "r2", "d3": "r1"}
	if diff := cmp.Diff(want, holders("d1", "d2", "d3", "unknown")); diff != "" {
		t.Errorf("SessionHolders after opening (-want +got):\n%s", diff)
	}

	// r1 closing d2 late must not forget r2's stream.
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.CloseSessions(ctx, "r1", []string{"d1", "d2"})
	})
	want = map[string]string{"d2": "r2", "d3": "r1"}
	if diff := cmp.Diff(want, holders("d1", "d2", "d3")); diff != "" {
		t.Errorf("SessionHolders after r1 closed d1 and d2 (-want +got):\n%s", diff)
	}

	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.CloseSessions(ctx, "r1", nil)
	})
	want = map[string]string{"d2": "r2"}
	if diff := cmp.Diff(want, holders("d1", "d2", "d3")); diff != "" {
		t.Errorf("SessionHolders after r1 closed all (-want +got):\n%s", diff)
	}
	if got := holders(); len(got) != 0 {
		t.Errorf("SessionHolders of no devices = %v; want none", got)
	}

	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		return tx.OpenSessions(ctx, "", []string{"d1"}, at)
	})
	if !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("OpenSessions with an empty replica id: error = %v; want ErrInvalidArgument", err)
	}
}

func testListSessions(t *testing.T, open Opener) {
	s := open(t, nil)
	at := testNow()
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.OpenSessions(ctx, "r1", []string{"d3", "d1", "d5"}, at); err != nil {
			return err
		}
		return tx.OpenSessions(ctx, "r2", []string{"d2", "d4"}, at)
	})
	list := func(filter store.SessionFilter) []string {
		t.Helper()
		var got []string
		for {
			var page []store.Session
			var next string
			inTx(t, s, func(ctx context.Context, tx store.Tx) error {
				var err error
				page, next, err = tx.ListSessions(ctx, filter)
				return err
			})
			for _, sess := range page {
				got = append(got, sess.Device+"@"+sess.Replica)
				if !sess.OpenedAt.Equal(at) {
					t.Errorf("session %s opened at %v; want %v", sess.Device, sess.OpenedAt, at)
				}
			}
			if next == "" {
				return got
			}
			filter.PageToken = next
		}
	}
	want := []string{"d1@r1", "d2@r2", "d3@r1", "d4@r2", "d5@r1"}
	if diff := cmp.Diff(want, list(store.SessionFilter{Limit: 2})); diff != "" {
		t.Errorf("ListSessions in pages of 2 (-want +got):\n%s", diff)
	}
	want = []string{"d2@r2", "d4@r2"}
	if diff := cmp.Diff(want, list(store.SessionFilter{Replica: "r2"})); diff != "" {
		t.Errorf("ListSessions of r2 (-want +got):\n%s", diff)
	}
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, _, err := tx.ListSessions(ctx, store.SessionFilter{PageToken: "not-a-token"})
		return err
	})
	if !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("ListSessions with a bad page token: error = %v; want ErrInvalidArgument", err)
	}
}

func testInitSetting(t *testing.T, open Opener) {
	s := open(t, nil)
	for _, tc := range []struct{ value, want string }{
		{"first", "first"}, {"second", "first"},
	} {
		var got string
		inTx(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			got, err = tx.InitSetting(ctx, "ca_fingerprint", tc.value)
			return err
		})
		if got != tc.want {
			t.Errorf("InitSetting(ca_fingerprint, %q) = %q; want %q", tc.value, got, tc.want)
		}
	}
}
