package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/internal/pagetoken"
	"github.com/jackc/pgx/v5"
)

// maxErrorLength is the longest last_error kept, in bytes; longer messages are cut.
const maxErrorLength = 4096

const taskColumns = `kind, key, shard, state, attempts, rerun, last_error, run_at, created_at`

func scanTask(row pgx.Row) (store.Task, error) {
	var task store.Task
	var state string
	var runAt, createdAt int64
	err := row.Scan(&task.Kind, &task.Key, &task.Shard, &state, &task.Attempts, &task.Rerun,
		&task.LastError, &runAt, &createdAt)
	task.State = store.TaskState(state)
	task.RunAt = time.Unix(0, runAt)
	task.CreatedAt = time.Unix(0, createdAt)
	return task, err
}

func scanTaskRows(rows pgx.Rows) (store.Task, error) { return scanTask(rows) }

func (t *tx) getTask(ctx context.Context, kind, key string) (store.Task, error) {
	if checkText("task kind", kind) != nil || checkText("task key", key) != nil {
		return store.Task{}, fmt.Errorf("task %s %q: %w", kind, key, store.ErrNotFound)
	}
	task, err := scanTask(t.queryRow(ctx,
		`SELECT `+taskColumns+` FROM tasks WHERE kind = $1 AND key = $2`, kind, key))
	if errors.Is(err, pgx.ErrNoRows) {
		return task, fmt.Errorf("task %s %q: %w", kind, key, store.ErrNotFound)
	}
	if err != nil {
		return task, fmt.Errorf("get task %s %q: %w", kind, key, err)
	}
	return task, nil
}

// qEnqueueTask inserts a pending task or coalesces with the existing row in one statement.
// A running task is marked for a rerun, and its run_at then holds the rerun's time. A failed
// task becomes pending with zero attempts. The run time becomes the earlier of the two, except
// for a running task without a rerun, whose run_at is its current run's and is replaced. The
// CTE reads the row as it was before the statement, to report whether it coalesced.
const qEnqueueTask = `WITH existing AS (
		SELECT 1 FROM tasks WHERE kind = $1 AND key = $2)
	INSERT INTO tasks (` + taskColumns + `)
	VALUES ($1, $2, $3, $4, 0, false, '', $6, $7)
	ON CONFLICT (kind, key) DO UPDATE SET
		rerun = tasks.rerun OR tasks.state = $5,
		state = CASE WHEN tasks.state = $5 THEN tasks.state ELSE excluded.state END,
		attempts = CASE WHEN tasks.state IN ($4, $5) THEN tasks.attempts ELSE 0 END,
		run_at = CASE WHEN tasks.state = $5 AND NOT tasks.rerun THEN excluded.run_at
			ELSE least(tasks.run_at, excluded.run_at) END
	RETURNING (SELECT count(*) FROM existing) > 0`

// EnqueueTask records that (kind, key) must run at or after runAt, coalescing with an existing
// task. A failed task that is triggered again starts over with zero attempts.
func (t *tx) EnqueueTask(ctx context.Context, kind, key string, runAt time.Time) (bool, error) {
	if kind == "" || key == "" {
		return false, fmt.Errorf("enqueue task: %w: kind and key must not be empty",
			store.ErrInvalidArgument)
	}
	if err := errors.Join(checkText("task kind", kind), checkText("task key", key)); err != nil {
		return false, fmt.Errorf("enqueue task: %w", err)
	}
	var coalesced bool
	err := t.queryRow(ctx, qEnqueueTask, kind, key, store.ShardOf(key, t.s.shardCount),
		string(store.TaskPending), string(store.TaskRunning), runAt.UnixNano(),
		time.Now().UnixNano()).Scan(&coalesced)
	if err != nil {
		return false, fmt.Errorf("enqueue task %s %q: %w", kind, key, err)
	}
	t.notify = true
	return coalesced, nil
}

// ClaimTasks marks up to limit due pending tasks of shards as running, oldest run time first.
func (t *tx) ClaimTasks(ctx context.Context, shards []int, now time.Time, limit int) ([]store.Task, error) {
	if len(shards) == 0 || limit <= 0 {
		return nil, nil
	}
	shardIDs := make([]int32, len(shards))
	for i, s := range shards {
		shardIDs[i] = int32(s)
	}
	rows, err := t.query(ctx, `SELECT `+taskColumns+` FROM tasks
		WHERE state = $1 AND run_at <= $2 AND shard = ANY($3)
		ORDER BY run_at, kind, key LIMIT $4`,
		string(store.TaskPending), now.UnixNano(), shardIDs, limit)
	if err != nil {
		return nil, fmt.Errorf("claim tasks: %w", err)
	}
	tasks, err := collect(t, rows, scanTaskRows)
	if err != nil {
		return nil, fmt.Errorf("claim tasks: %w", err)
	}
	if len(tasks) == 0 {
		return nil, nil
	}

	kinds := make([]string, len(tasks))
	keys := make([]string, len(tasks))
	for i := range tasks {
		tasks[i].State = store.TaskRunning
		kinds[i], keys[i] = tasks[i].Kind, tasks[i].Key
	}
	_, err = t.exec(ctx, `UPDATE tasks SET state = $1
		WHERE (kind, key) IN (SELECT * FROM unnest($2::TEXT[], $3::TEXT[]))`,
		string(store.TaskRunning), kinds, keys)
	if err != nil {
		return nil, fmt.Errorf("claim %d tasks: %w", len(tasks), err)
	}
	return tasks, nil
}

// runningTask returns the task, or an error unless it exists and is running.
func (t *tx) runningTask(ctx context.Context, kind, key string) (store.Task, error) {
	task, err := t.getTask(ctx, kind, key)
	if err != nil {
		return task, err
	}
	if task.State != store.TaskRunning {
		return task, fmt.Errorf("task %s %q is %s, not Running: %w",
			kind, key, task.State, store.ErrConflict)
	}
	return task, nil
}

// FinishTask removes a running task, or makes it pending again if it was re-triggered while it
// ran. It returns ErrNotFound for a missing task and ErrConflict for one that is not running.
func (t *tx) FinishTask(ctx context.Context, kind, key string) error {
	task, err := t.runningTask(ctx, kind, key)
	if err != nil {
		return fmt.Errorf("finish: %w", err)
	}
	if task.Rerun {
		_, err = t.exec(ctx, `UPDATE tasks SET state = $1, rerun = false, attempts = 0,
			last_error = '' WHERE kind = $2 AND key = $3`, string(store.TaskPending), kind, key)
		t.notify = true
	} else {
		_, err = t.exec(ctx, `DELETE FROM tasks WHERE kind = $1 AND key = $2`, kind, key)
	}
	if err != nil {
		return fmt.Errorf("finish task %s %q: %w", kind, key, err)
	}
	return nil
}

// RetryTask makes a running task pending again at runAt with one more attempt, or Failed when
// failed is set. A task re-triggered while it ran becomes pending at runAt even when failed is
// set, and then starts over with zero attempts.
func (t *tx) RetryTask(
	ctx context.Context, kind, key string, runAt time.Time, lastError string, failed bool,
) error {
	task, err := t.runningTask(ctx, kind, key)
	if err != nil {
		return fmt.Errorf("retry: %w", err)
	}
	lastError = truncate(cleanText(lastError), maxErrorLength)
	state, attempts := store.TaskPending, task.Attempts+1
	switch {
	case failed && task.Rerun:
		attempts = 0
	case failed:
		state = store.TaskFailed
	}
	_, err = t.exec(ctx, `UPDATE tasks SET state = $1, attempts = $2, rerun = false,
		last_error = $3, run_at = $4 WHERE kind = $5 AND key = $6`,
		string(state), attempts, lastError, runAt.UnixNano(), kind, key)
	if err != nil {
		return fmt.Errorf("retry task %s %q: %w", kind, key, err)
	}
	t.notify = true
	return nil
}

// truncate cuts s to at most n bytes on a UTF-8 boundary and marks the cut with "...".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// ResetRunning makes the running tasks of shard pending and due at once, and returns how many
// there were.
func (t *tx) ResetRunning(ctx context.Context, shard int) (int64, error) {
	tag, err := t.exec(ctx, `UPDATE tasks SET state = $1, rerun = false,
			run_at = least(run_at, $2)
		WHERE shard = $3 AND state = $4`,
		string(store.TaskPending), time.Now().UnixNano(), shard, string(store.TaskRunning))
	if err != nil {
		return 0, fmt.Errorf("reset running tasks of shard %d: %w", shard, err)
	}
	n := tag.RowsAffected()
	if n > 0 {
		t.notify = true
	}
	return n, nil
}

// taskScope is the page-token scope of ListTasks.
const taskScope = "tasks"

// ListTasks returns one page of tasks ordered by kind and key.
func (t *tx) ListTasks(ctx context.Context, filter store.TaskFilter) ([]store.Task, string, error) {
	after, err := pagetoken.Decode(filter.PageToken, taskScope, 2)
	if err != nil {
		return nil, "", fmt.Errorf("list tasks: %w", err)
	}
	if after == nil {
		after = []string{"", ""}
	}
	err = errors.Join(checkText("page token", after[0]+after[1]),
		checkText("task kind", filter.Kind), checkText("task state", string(filter.State)))
	if err != nil {
		return nil, "", fmt.Errorf("list tasks: %w", err)
	}
	limit := pageSize(filter.Limit)

	rows, err := t.query(ctx, `SELECT `+taskColumns+` FROM tasks
		WHERE (kind, key) > ($1, $2) AND ($3 = '' OR kind = $3) AND ($4 = '' OR state = $4)
		ORDER BY kind, key LIMIT $5`,
		after[0], after[1], filter.Kind, string(filter.State), limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list tasks: %w", err)
	}
	tasks, err := collect(t, rows, scanTaskRows)
	if err != nil {
		return nil, "", fmt.Errorf("list tasks: %w", err)
	}
	if len(tasks) <= limit {
		return tasks, "", nil
	}
	tasks = tasks[:limit]
	lastTask := tasks[limit-1]
	return tasks, pagetoken.Encode(taskScope, lastTask.Kind, lastTask.Key), nil
}

// CountTasks returns the number of tasks by kind and state.
func (t *tx) CountTasks(ctx context.Context) (map[string]map[store.TaskState]int64, error) {
	rows, err := t.query(ctx, `SELECT kind, state, count(*) FROM tasks GROUP BY kind, state`)
	if err != nil {
		return nil, fmt.Errorf("count tasks: %w", err)
	}
	type count struct {
		kind, state string
		n           int64
	}
	counts, err := collect(t, rows, func(r pgx.Rows) (count, error) {
		var c count
		return c, r.Scan(&c.kind, &c.state, &c.n)
	})
	if err != nil {
		return nil, fmt.Errorf("count tasks: %w", err)
	}
	out := map[string]map[store.TaskState]int64{}
	for _, c := range counts {
		if out[c.kind] == nil {
			out[c.kind] = map[store.TaskState]int64{}
		}
		out[c.kind][store.TaskState(c.state)] = c.n
	}
	return out, nil
}
