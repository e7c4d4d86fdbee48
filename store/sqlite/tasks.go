package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/internal/pagetoken"
)

// maxErrorLength is the longest last_error kept; longer messages are cut.
const maxErrorLength = 4096

const taskColumns = `kind, key, shard, state, attempts, rerun, last_error, run_at, created_at`

var (
	qGetTask    = prepared(`SELECT ` + taskColumns + ` FROM tasks WHERE kind = ? AND key = ?`)
	qInsertTask = prepared(`INSERT INTO tasks (` + taskColumns + `)
		VALUES (?, ?, ?, ?, 0, 0, '', ?, ?)`)
)

func scanTask(sc scanner) (store.Task, error) {
	var task store.Task
	var state string
	var rerun int
	var runAt, createdAt int64
	err := sc.Scan(&task.Kind, &task.Key, &task.Shard, &state, &task.Attempts, &rerun,
		&task.LastError, &runAt, &createdAt)
	task.State = store.TaskState(state)
	task.Rerun = rerun != 0
	task.RunAt = time.Unix(0, runAt)
	task.CreatedAt = time.Unix(0, createdAt)
	return task, err
}

func (t *tx) getTask(ctx context.Context, kind, key string) (store.Task, error) {
	row := t.queryRow(ctx, qGetTask, kind, key)
	task, err := scanTask(row)
	if errors.Is(err, sql.ErrNoRows) {
		return task, fmt.Errorf("task %s %q: %w", kind, key, store.ErrNotFound)
	}
	if err != nil {
		return task, fmt.Errorf("get task %s %q: %w", kind, key, err)
	}
	return task, nil
}

// EnqueueTask records that (kind, key) must run at or after runAt, coalescing with an existing
// task. A failed task that is triggered again starts over with zero attempts.
func (t *tx) EnqueueTask(ctx context.Context, kind, key string, runAt time.Time) (bool, error) {
	if kind == "" || key == "" {
		return false, fmt.Errorf("enqueue task: %w: kind and key must not be empty",
			store.ErrInvalidArgument)
	}
	task, err := t.getTask(ctx, kind, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = t.exec(ctx, qInsertTask, kind, key, store.ShardOf(key, t.s.shardCount),
			string(store.TaskPending), runAt.UnixNano(), time.Now().UnixNano())
		if err != nil {
			return false, fmt.Errorf("enqueue task %s %q: %w", kind, key, err)
		}
		t.notify = true
		return false, nil
	case err != nil:
		return false, fmt.Errorf("enqueue: %w", err)
	}

	at := runAt
	switch task.State {
	case store.TaskRunning:
		// The rerun's run time waits in run_at until FinishTask makes the task pending.
		if task.Rerun && task.RunAt.Before(at) {
			at = task.RunAt
		}
		_, err = t.exec(ctx, `UPDATE tasks SET rerun = 1, run_at = ?
			WHERE kind = ? AND key = ?`, at.UnixNano(), kind, key)
	case store.TaskPending:
		if task.RunAt.Before(at) {
			at = task.RunAt
		}
		_, err = t.exec(ctx, `UPDATE tasks SET run_at = ? WHERE kind = ? AND key = ?`,
			at.UnixNano(), kind, key)
	default:
		if task.RunAt.Before(at) {
			at = task.RunAt
		}
		_, err = t.exec(ctx, `UPDATE tasks SET state = ?, attempts = 0, run_at = ?
			WHERE kind = ? AND key = ?`, string(store.TaskPending), at.UnixNano(), kind, key)
	}
	if err != nil {
		return false, fmt.Errorf("enqueue task %s %q: %w", kind, key, err)
	}
	t.notify = true
	return true, nil
}

// ClaimTasks marks up to limit due pending tasks of shards as running, oldest run time first.
func (t *tx) ClaimTasks(ctx context.Context, shards []int, now time.Time, limit int) ([]store.Task, error) {
	if len(shards) == 0 || limit <= 0 {
		return nil, nil
	}
	args := []any{string(store.TaskPending), now.UnixNano()}
	for _, s := range shards {
		args = append(args, s)
	}
	args = append(args, limit)

	q := `SELECT ` + taskColumns + ` FROM tasks WHERE state = ? AND run_at <= ?
		AND shard IN (?` + strings.Repeat(", ?", len(shards)-1) + `)
		ORDER BY run_at, kind, key LIMIT ?`
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("claim tasks: %w", err)
	}
	var tasks []store.Task
	for rows.Next() {
		task, err := scanTask(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("claim tasks: %w", err)
		}
		task.State = store.TaskRunning
		tasks = append(tasks, task)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim tasks: %w", err)
	}

	for _, task := range tasks {
		_, err := t.exec(ctx, `UPDATE tasks SET state = ? WHERE kind = ? AND key = ?`,
			string(store.TaskRunning), task.Kind, task.Key)
		if err != nil {
			return nil, fmt.Errorf("claim task %s %q: %w", task.Kind, task.Key, err)
		}
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
		_, err = t.exec(ctx, `UPDATE tasks SET state = ?, rerun = 0, attempts = 0,
			last_error = '' WHERE kind = ? AND key = ?`, string(store.TaskPending), kind, key)
		t.notify = true
	} else {
		_, err = t.exec(ctx, `DELETE FROM tasks WHERE kind = ? AND key = ?`, kind, key)
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
	lastError = truncate(lastError, maxErrorLength)
	state, attempts := store.TaskPending, task.Attempts+1
	switch {
	case failed && task.Rerun:
		attempts = 0
	case failed:
		state = store.TaskFailed
	}
	_, err = t.exec(ctx, `UPDATE tasks SET state = ?, attempts = ?, rerun = 0,
		last_error = ?, run_at = ? WHERE kind = ? AND key = ?`,
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

// ResetRunning makes the running tasks of shard pending again and returns how many there were.
// They become due at once, even when a rerun asked for a later time, because their last run
// may not have finished.
func (t *tx) ResetRunning(ctx context.Context, shard int) (int64, error) {
	res, err := t.exec(ctx, `UPDATE tasks SET state = ?, rerun = 0, run_at = min(run_at, ?)
		WHERE shard = ? AND state = ?`,
		string(store.TaskPending), time.Now().UnixNano(), shard, string(store.TaskRunning))
	if err != nil {
		return 0, fmt.Errorf("reset running tasks of shard %d: %w", shard, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("reset running tasks of shard %d: %w", shard, err)
	}
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
	limit := pageSize(filter.Limit)

	rows, err := t.query(ctx, `SELECT `+taskColumns+` FROM tasks
		WHERE (kind > ? OR (kind = ? AND key > ?))
			AND (? = '' OR kind = ?) AND (? = '' OR state = ?)
		ORDER BY kind, key LIMIT ?`,
		after[0], after[0], after[1], filter.Kind, filter.Kind,
		string(filter.State), string(filter.State), limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	var tasks []store.Task
	for rows.Next() {
		task, err := scanTask(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list tasks: %w", err)
		}
		tasks = append(tasks, task)
	}
	if err := rows.Err(); err != nil {
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
	rows, err := t.query(ctx,
		`SELECT kind, state, count(*) FROM tasks GROUP BY kind, state`)
	if err != nil {
		return nil, fmt.Errorf("count tasks: %w", err)
	}
	defer rows.Close()
	out := map[string]map[store.TaskState]int64{}
	for rows.Next() {
		var kind, state string
		var n int64
		if err := rows.Scan(&kind, &state, &n); err != nil {
			return nil, fmt.Errorf("count tasks: %w", err)
		}
		if out[kind] == nil {
			out[kind] = map[store.TaskState]int64{}
		}
		out[kind][store.TaskState(state)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count tasks: %w", err)
	}
	return out, nil
}
