package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

const testKind = "TestTask"

func enqueue(t *testing.T, s store.Store, kind, key string, runAt time.Time) bool {
	t.Helper()
	var coalesced bool
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		coalesced, err = tx.EnqueueTask(ctx, kind, key, runAt)
		return err
	})
	return coalesced
}

func claim(t *testing.T, s store.Store, shards []int, now time.Time, limit int) []store.Task {
	t.Helper()
	var out []store.Task
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		out, err = tx.ClaimTasks(ctx, shards, now, limit)
		return err
	})
	return out
}

// allShards returns every shard number of s.
func allShards(t *testing.T, s store.Store) []int {
	t.Helper()
	var n int
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		n, err = tx.ShardCount(ctx)
		return err
	})
	shards := make([]int, n)
	for i := range shards {
		shards[i] = i
	}
	return shards
}

func oneTask(t *testing.T, s store.Store, key string) store.Task {
	t.Helper()
	for _, task := range listTasks(t, s, store.TaskFilter{Kind: testKind}) {
		if task.Key == key {
			return task
		}
	}
	t.Fatalf("task %s %q not found", testKind, key)
	return store.Task{}
}

func taskKeys(tasks []store.Task) []string {
	out := []string{}
	for _, task := range tasks {
		out = append(out, task.Key)
	}
	return out
}

func testTaskCoalescing(t *testing.T, open Opener) {
	s := open(t, nil)
	now := testNow()
	if enqueue(t, s, testKind, "k1", now.Add(time.Minute)) {
		t.Errorf("first EnqueueTask reported coalesced")
	}
	if !enqueue(t, s, testKind, "k1", now.Add(time.Hour)) {
		t.Errorf("second EnqueueTask of a pending task did not coalesce")
	}
	task := oneTask(t, s, "k1")
	if task.State != store.TaskPending {
		t.Errorf("state = %s; want Pending", task.State)
	}
	if !task.RunAt.Equal(now.Add(time.Minute)) {
		t.Errorf("run_at = %v; want the earlier %v", task.RunAt, now.Add(time.Minute))
	}
	enqueue(t, s, testKind, "k1", now.Add(-time.Second))
	if got := oneTask(t, s, "k1").RunAt; !got.Equal(now.Add(-time.Second)) {
		t.Errorf("run_at after an earlier trigger = %v; want %v", got, now.Add(-time.Second))
	}
	if n := len(listTasks(t, s, store.TaskFilter{})); n != 1 {
		t.Errorf("%d tasks after three triggers of one key; want 1", n)
	}
	enqueue(t, s, "OtherTask", "k1", now)
	if n := len(listTasks(t, s, store.TaskFilter{})); n != 2 {
		t.Errorf("%d tasks after a trigger of another kind; want 2", n)
	}
}

func testTaskRerun(t *testing.T, open Opener) {
	s := open(t, nil)
	now := testNow()
	enqueue(t, s, testKind, "k1", now.Add(-time.Second))
	claimed := claim(t, s, allShards(t, s), now, 10)
	if len(claimed) != 1 || claimed[0].State != store.TaskRunning {
		t.Fatalf("ClaimTasks = %v; want k1 running", claimed)
	}
	if again := claim(t, s, allShards(t, s), now, 10); len(again) != 0 {
		t.Fatalf("a running task was claimed twice: %v", again)
	}

	if !enqueue(t, s, testKind, "k1", now) {
		t.Errorf("EnqueueTask of a running task did not report coalesced")
	}
	running := oneTask(t, s, "k1")
	if running.State != store.TaskRunning || !running.Rerun {
		t.Errorf("task after trigger while running = %s rerun=%v; want Running rerun=true",
			running.State, running.Rerun)
	}
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.FinishTask(ctx, testKind, "k1")
	})
	pending := oneTask(t, s, "k1")
	if pending.State != store.TaskPending || pending.Rerun {
		t.Errorf("task after FinishTask = %s rerun=%v; want Pending rerun=false",
			pending.State, pending.Rerun)
	}

	if got := claim(t, s, allShards(t, s), now.Add(time.Second), 10); len(got) != 1 {
		t.Fatalf("rerun not claimable: %v", got)
	}
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.FinishTask(ctx, testKind, "k1")
	})
	if tasks := listTasks(t, s, store.TaskFilter{}); len(tasks) != 0 {
		t.Errorf("tasks after the final FinishTask = %v; want none", tasks)
	}
}

func testTaskClaim(t *testing.T, open Opener) {
	s := open(t, nil)
	now := testNow()
	shards := allShards(t, s)
	for i := range 30 {
		enqueue(t, s, testKind, fmt.Sprintf("k%02d", i), now.Add(-time.Duration(30-i)*time.Second))
	}
	enqueue(t, s, testKind, "later", now.Add(time.Hour))

	target := store.ShardOf("k00", len(shards))
	var want []string
	for i := range 30 {
		key := fmt.Sprintf("k%02d", i)
		if store.ShardOf(key, len(shards)) == target {
			want = append(want, key)
		}
	}
	got := claim(t, s, []int{target}, now, 100)
	if diff := cmp.Diff(want, taskKeys(got)); diff != "" {
		t.Errorf("claim of shard %d (-want +got):\n%s", target, diff)
	}
	for _, task := range got {
		if task.Shard != target {
			t.Errorf("task %s has shard %d; want %d", task.Key, task.Shard, target)
		}
	}

	rest := claim(t, s, shards, now, 5)
	if len(rest) != 5 {
		t.Fatalf("claim with limit 5 returned %d tasks", len(rest))
	}
	for i := 1; i < len(rest); i++ {
		if rest[i].RunAt.Before(rest[i-1].RunAt) {
			t.Errorf("claimed tasks not ordered by run time: %v before %v",
				rest[i-1].RunAt, rest[i].RunAt)
		}
	}
	all := claim(t, s, shards, now, 100)
	for _, task := range all {
		if task.Key == "later" {
			t.Errorf("a task due in an hour was claimed")
		}
	}
	if n := len(got) + len(rest) + len(all); n != 30 {
		t.Errorf("claimed %d due tasks in total; want 30", n)
	}
	if len(claim(t, s, nil, now.Add(2*time.Hour), 100)) != 0 {
		t.Errorf("claim with no shards returned tasks")
	}
}

func testTaskRetry(t *testing.T, open Opener) {
	s := open(t, nil)
	now := testNow()
	shards := allShards(t, s)
	enqueue(t, s, testKind, "k1", now)
	claim(t, s, shards, now, 1)
	retryAt := now.Add(time.Minute)
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.RetryTask(ctx, testKind, "k1", retryAt, "boom", false)
	})
	task := oneTask(t, s, "k1")
	if task.State != store.TaskPending || task.Attempts != 1 || task.LastError != "boom" {
		t.Errorf("after RetryTask: state %s attempts %d last_error %q; want Pending 1 boom",
			task.State, task.Attempts, task.LastError)
	}
	if got := claim(t, s, shards, now, 1); len(got) != 0 {
		t.Errorf("task claimed before its retry time: %v", got)
	}
	if got := claim(t, s, shards, retryAt, 1); len(got) != 1 {
		t.Fatalf("task not claimable at its retry time")
	}

	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.RetryTask(ctx, testKind, "k1", retryAt, "boom again", true)
	})
	failed := oneTask(t, s, "k1")
	if failed.State != store.TaskFailed || failed.Attempts != 2 {
		t.Errorf("after failing RetryTask: state %s attempts %d; want Failed 2",
			failed.State, failed.Attempts)
	}
	if got := claim(t, s, shards, now.Add(time.Hour), 10); len(got) != 0 {
		t.Errorf("a failed task was claimed: %v", got)
	}
	if !enqueue(t, s, testKind, "k1", now) {
		t.Errorf("EnqueueTask of a failed task did not coalesce")
	}
	if got := oneTask(t, s, "k1"); got.State != store.TaskPending {
		t.Errorf("failed task after a new trigger is %s; want Pending", got.State)
	}

	// A task re-triggered while it ran is retried even when it would fail.
	claim(t, s, shards, now.Add(time.Hour), 1)
	enqueue(t, s, testKind, "k1", now)
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.RetryTask(ctx, testKind, "k1", retryAt, "boom", true)
	})
	if got := oneTask(t, s, "k1"); got.State != store.TaskPending || !got.RunAt.Equal(retryAt) {
		t.Errorf("re-triggered task after failing RetryTask: %s at %v; want Pending at %v",
			got.State, got.RunAt, retryAt)
	}
}

func testTaskFinishNotRunning(t *testing.T, open Opener) {
	s := open(t, nil)
	enqueue(t, s, testKind, "k1", time.Now())
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		return tx.FinishTask(ctx, testKind, "k1")
	})
	wantErr(t, err, store.ErrConflict, "FinishTask of a pending task")
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		return tx.FinishTask(ctx, testKind, "missing")
	})
	wantErr(t, err, store.ErrNotFound, "FinishTask of a missing task")
	if got := oneTask(t, s, "k1"); got.State != store.TaskPending {
		t.Errorf("pending task after a rejected FinishTask is %s", got.State)
	}
}

func testTaskResetRunning(t *testing.T, open Opener) {
	s := open(t, nil)
	now := testNow()
	shards := allShards(t, s)
	shard := store.ShardOf("a", len(shards))
	var keys []string
	for i := 0; len(keys) < 2; i++ {
		key := fmt.Sprintf("k%d", i)
		if store.ShardOf(key, len(shards)) == shard {
			keys = append(keys, key)
			enqueue(t, s, testKind, key, now)
		}
	}
	other := "z"
	for store.ShardOf(other, len(shards)) == shard {
		other += "z"
	}
	enqueue(t, s, testKind, other, now)
	claim(t, s, shards, now, 10)
	// A rerun due later must not delay the run that the reset repeats.
	enqueue(t, s, testKind, keys[0], now.Add(time.Hour))

	var n int64
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		n, err = tx.ResetRunning(ctx, shard)
		return err
	})
	if n != 2 {
		t.Errorf("ResetRunning returned %d; want 2", n)
	}
	for _, key := range keys {
		if got := oneTask(t, s, key); got.State != store.TaskPending {
			t.Errorf("task %s after ResetRunning is %s; want Pending", key, got.State)
		}
	}
	if got := oneTask(t, s, other); got.State != store.TaskRunning {
		t.Errorf("task %s of another shard is %s; want Running", other, got.State)
	}
	reclaimed := claim(t, s, []int{shard}, time.Now().Add(time.Second), 10)
	if len(reclaimed) != 2 {
		t.Errorf("claimed %d reset tasks at once; want 2", len(reclaimed))
	}
}

func testTaskListAndCount(t *testing.T, open Opener) {
	s := open(t, nil)
	now := testNow()
	for i := range 25 {
		enqueue(t, s, testKind, fmt.Sprintf("k%02d", i), now)
	}
	enqueue(t, s, "OtherTask", "x", now.Add(time.Hour))
	claim(t, s, allShards(t, s), now, 5)

	var keys []string
	filter := store.TaskFilter{Kind: testKind, Limit: 10}
	pages := 0
	for {
		var page []store.Task
		var next string
		inTx(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			page, next, err = tx.ListTasks(ctx, filter)
			return err
		})
		pages++
		keys = append(keys, taskKeys(page)...)
		if next == "" || pages > 5 {
			break
		}
		filter.PageToken = next
	}
	if pages != 3 || len(keys) != 25 {
		t.Errorf("listed %d tasks in %d pages; want 25 in 3", len(keys), pages)
	}
	for i := 1; i < len(keys); i++ {
		if keys[i] <= keys[i-1] {
			t.Errorf("ListTasks not ordered by key: %q after %q", keys[i], keys[i-1])
		}
	}
	running := listTasks(t, s, store.TaskFilter{State: store.TaskRunning})
	if len(running) != 5 {
		t.Errorf("ListTasks of running tasks returned %d; want 5", len(running))
	}
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, _, err := tx.ListTasks(ctx, store.TaskFilter{PageToken: "garbage"})
		return err
	})
	wantErr(t, err, store.ErrInvalidArgument, "ListTasks with a malformed token")

	var counts map[string]map[store.TaskState]int64
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		counts, err = tx.CountTasks(ctx)
		return err
	})
	want := map[string]map[store.TaskState]int64{
		testKind:    {store.TaskPending: 20, store.TaskRunning: 5},
		"OtherTask": {store.TaskPending: 1},
	}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("CountTasks (-want +got):\n%s", diff)
	}
}
