-- Claiming walks the due pending tasks in run order and stops at its limit, skipping the
-- tasks of shards another replica holds. With only tasks_claim, every claim read and sorted
-- all pending tasks of the claimer's shards.
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (state, run_at, kind, key);
