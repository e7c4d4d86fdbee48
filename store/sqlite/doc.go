// Package sqlite is the embedded Store backend: one SQLite database file in WAL mode, through
// the pure-Go driver modernc.org/sqlite.
//
// # Concurrency
//
// SQLite allows one writer at a time, so the Store keeps a single database connection and every
// InTx call runs on it. Transactions are therefore serialized in this process. A caller waits
// for the connection, honouring its context, while another transaction runs. Each transaction
// starts with BEGIN IMMEDIATE, so it takes the write lock at once and cannot get SQLITE_BUSY
// later when a read turns into a write. Another process that opens the same file waits up to
// the busy timeout (10 s) for the lock.
//
// NOTE: reads are serialized with writes as well. A separate read-only pool would let WAL
// readers run in parallel, but InTx does not say in advance whether it will write.
//
// # Versions
//
// Every resource write appends a row to the changes table, whose INTEGER PRIMARY KEY
// AUTOINCREMENT column allocates the version. Because writers are serialized, versions are
// committed in increasing order, and AUTOINCREMENT never reuses a version after PruneChanges
// removes old rows. The written object's metadata.resource_version is that version in decimal.
//
// # Change hook and notification
//
// The ChangeHook runs inside the writing transaction after each change. If it fails, the write
// returns its error and InTx rolls back even when fn ignores the error. After a commit that
// wrote a change or a task, every Subscribe channel receives a value without blocking.
package sqlite
