package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// keyInShard returns a task key that hashes to shard.
func keyInShard(t *testing.T, shard int) string {
	t.Helper()
	for i := range 10000 {
		if key := fmt.Sprintf("Device/d%d", i); store.ShardOf(key, testShards) == shard {
			return key
		}
	}
	t.Fatalf("no key found for shard %d", shard)
	return ""
}

func TestClaimFencedRollsBackLostShard(t *testing.T) {
	st := openStore(t, tempDB(t))
	ctx := context.Background()
	now := time.Now()
	heldShard, lostShard := 0, 1
	fences := map[int]store.Fence{}
	err := st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		for _, shard := range []int{heldShard, lostShard} {
			lease, err := tx.AcquireLease(ctx, shard, "r1", now, now.Add(time.Minute))
			if err != nil {
				return err
			}
			fences[shard] = store.Fence{Shard: shard, Owner: "r1", Epoch: lease.Epoch}
			if _, err := tx.EnqueueTask(ctx, "render", keyInShard(t, shard), now); err != nil {
				return err
			}
		}
		// Another replica takes the second shard after r1's lease expired.
		later := now.Add(2 * time.Minute)
		_, err := tx.AcquireLease(ctx, lostShard, "r2", later, later.Add(time.Minute))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	err = st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		_, err := claimFenced(ctx, tx, fences, 10)
		return err
	})
	var fenced fencedShardError
	if !errors.As(err, &fenced) || fenced.shard != lostShard {
		t.Fatalf("claim over a lost shard: error = %v; want fencedShardError for shard %d", err, lostShard)
	}

	// The rolled-back claim left both tasks pending, and a claim without the lost shard takes
	// only the held shard's task.
	delete(fences, lostShard)
	var tasks []store.Task
	err = st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		tasks, err = claimFenced(ctx, tx, fences, 10)
		return err
	})
	if err != nil {
		t.Fatalf("claim over the held shard: %v", err)
	}
	if len(tasks) != 1 || tasks[0].Shard != heldShard {
		t.Errorf("claimed %v; want the one task of shard %d", tasks, heldShard)
	}
	var pending []store.Task
	err = st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		pending, _, err = tx.ListTasks(ctx, store.TaskFilter{State: store.TaskPending})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].Shard != lostShard {
		t.Errorf("pending tasks %v; want the lost shard's task still pending", pending)
	}
}
