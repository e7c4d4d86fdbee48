-- Claiming walks the due pending tasks in run order and stops at its limit. With only
-- tasks_claim, every claim read and sorted all pending tasks of the claimer's shards, so a
-- backlog of ten thousand tasks made each claim, and so the whole queue, slow.
CREATE INDEX tasks_due ON tasks (state, run_at, kind, key);
