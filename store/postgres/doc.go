// Package postgres is the multi-replica Store backend, on PostgreSQL or CockroachDB through
// pgx. Every server replica opens its own Store on the same database. The SQL stays within
// what both databases support; docs/cockroachdb.md lists the rules and their reasons.
//
// # Transactions and retries
//
// A Store is safe for concurrent use, and each InTx call runs on a connection of its pool in
// a SERIALIZABLE transaction. When the database aborts a transaction with a serialization
// failure (SQLSTATE 40001) during fn or at COMMIT, or with a deadlock (40P01), InTx rolls it
// back and runs fn again in a new transaction, after a short jittered backoff, up to
// Options.MaxRetries times. The retry
// loop is cockroach-go's crdb.ExecuteCtx around a whole transaction. Stats and the
// OpenTelemetry counter fleetplane.store.tx.retries (fleetplane_store_tx_retries_total in
// Prometheus) count the retries.
//
// The savepoint-based helper crdbpgxv5.ExecuteTx is not used, because on PostgreSQL it loses
// writes. RELEASE SAVEPOINT commits nothing there, and the helper ignores the error of the
// COMMIT that follows, so a transaction that PostgreSQL aborts at commit is reported as
// committed. With PostgreSQL 15 and cockroach-go v2.4.2, two write-skewed transactions both
// returned nil from it while one of their updates was missing.
//
// After a failed statement PostgreSQL rejects the rest of the transaction. The store
// remembers the first failure, so InTx still reports it (and retries a serialization failure)
// when fn ignored the error. Expected outcomes such as a taken name are therefore detected
// without a failing statement, for example with INSERT ... ON CONFLICT DO NOTHING.
//
// # Versions
//
// No shared counter allocates versions, because every write would then update the same row
// and collide with every other write. A version is a 63-bit integer made of the time in
// microseconds and a 12-bit node id that each Store draws at random when it opens (see
// versionClock). Versions from one Store strictly increase. A write also makes the object's
// new version greater than its stored one, so one object's versions increase whichever
// replicas write it, even with skewed clocks. Two Stores produce the same version only if
// they drew the same node id (probability 1/4096 for a pair) and their clocks reach the same
// microsecond. The change log's key is a random UUID, so such a duplicate is still stored.
//
// Versions of different objects are only roughly ordered by commit time. A version is fixed
// when the write runs, but it becomes visible when the transaction commits. Replicas' clocks
// also differ. So a change can appear in the log with a version below one that a reader
// already saw:
//
//   - in one process, by up to the time between the write and the commit of its
//     transaction;
//   - across replicas, by that time plus the clock skew between them.
//
// A watcher that calls Changes(after) with its cursor misses such a late change. A watcher
// that must not miss it re-reads from cursor - VersionsIn(window) on each poll and skips the
// versions it already sent, where window covers the longest transaction plus the clock skew
// (a few seconds with NTP). A change that commits later than that window behind the cursor
// is missed until the watcher lists the objects again.
//
// NOTE: the store does not bound transaction duration, so window is the caller's estimate.
//
// # Change hook and notification
//
// The ChangeHook runs inside the writing transaction after each change, and runs again on
// each retry. If it fails, the write returns its error and InTx rolls back even when fn
// ignores the error. After a commit that wrote a change or a task, every Subscribe channel of
// this Store receives a value without blocking. Commits by other replicas are not signalled;
// waking them up is left to the server, and polling is the fallback.
//
// # Migrations
//
// Open applies the embedded migrations in file-name order. To run them once when several
// replicas start together, Open first locks the lock row of schema_migrations with SELECT ...
// FOR UPDATE in a transaction that it keeps open, and applies each pending migration in a
// transaction of its own on another connection. Migrations are written to be idempotent,
// because a crash between a migration and its record runs it again.
package postgres
