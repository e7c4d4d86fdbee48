// Package apply applies rendered device specs on a device and persists what was applied.
//
// A Manager writes the spec's files under a root directory. Each file goes to a temporary
// file in its target directory, is synced, gets its mode and is renamed into place, so a
// reader never sees a half-written file. Before a file is replaced or removed, its previous
// content (or the fact that it did not exist) is kept in memory, so a failure part-way through
// restores every file already changed before the version is rejected.
//
// The Manager's state file in the data directory records the current (applied) spec, the
// desired spec while it is being applied, the highest rejected version with its error, and the
// files the current spec wrote. It is replaced atomically before and after every apply. If the
// process dies while applying, the desired spec is still in the file at the next start, and
// Recover applies it again or, if that fails, restores the current spec. Versions only go up:
// Apply rejects a spec whose version is not greater than the highest applied or rejected one.
//
// A Manager is safe for concurrent use. Apply and Recover run one at a time, and Versions
// waits while an apply runs.
package apply
