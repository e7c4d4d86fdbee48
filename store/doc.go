// Package store defines how Fleetplane persists its resources, its change log and its task
// queue, and the sentinel errors that every backend returns.
//
// A Store is opened by a backend package (store/sqlite, store/postgres). All reads and writes
// happen inside Store.InTx, so a resource write and the tasks it triggers commit together: the
// ChangeHook given to the backend runs inside the same transaction as the write that caused it.
//
// Invariants every backend keeps, checked by the conformance suite in store/storetest:
//   - ResourceVersion changes on every write of an object, and a write that carries a
//     ResourceVersion succeeds only if it still matches (otherwise ErrConflict).
//   - Generation starts at 1 and increases only when the spec changes.
//   - List pages are keyset-ordered by name, so an object that exists throughout a paged listing
//     appears exactly once, whatever is inserted or deleted between pages.
//   - Every write appends to a change log that Watch readers follow by version.
//   - A transaction run under a Fence commits only if the fence's shard lease is still held at
//     the fence's epoch (otherwise ErrFenced), so a replica that lost a shard writes nothing.
package store
