package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
)

// MinChangesKept is how many of the newest change-log entries PruneChanges always keeps, so
// that a watcher that falls briefly behind can still resume.
const MinChangesKept = 10000

var (
	qAppendChange = prepared(`INSERT INTO changes (kind, name, type, object, created_at)
		VALUES (?, ?, ?, x'', ?) RETURNING version`)
	qSetChangeObject = prepared(`UPDATE changes SET object = ? WHERE version = ?`)
	qLatestVersion   = prepared(`SELECT coalesce(max(version), 0) FROM changes`)
)

// appendChange inserts a change-log entry with an empty object and returns its new version.
// finishChange stores the object once the write has built it.
func (t *tx) appendChange(ctx context.Context, kind, name string, typ store.ChangeType) (int64, error) {
	var version int64
	err := t.queryRow(ctx, qAppendChange, kind, name, int(typ), time.Now().UnixNano()).Scan(&version)
	if err != nil {
		return 0, fmt.Errorf("append change: %w", err)
	}
	t.notify = true
	return version, nil
}

// finishChange stores the change's object in its log entry and runs the change hook. A hook
// failure is also kept in t so that InTx rolls back.
func (t *tx) finishChange(ctx context.Context, c store.Change) error {
	b, err := marshal.Marshal(c.Object)
	if err != nil {
		return fmt.Errorf("encode change %d: %w", c.Version, err)
	}
	_, err = t.exec(ctx, qSetChangeObject, b, c.Version)
	if err != nil {
		return fmt.Errorf("store change %d: %w", c.Version, err)
	}
	if t.s.hook == nil {
		return nil
	}
	if err := t.s.hook(ctx, t, c); err != nil {
		if t.hookErr == nil {
			t.hookErr = err
		}
		return fmt.Errorf("change hook: %w", err)
	}
	return nil
}

// Changes returns up to limit change-log entries of kind (every kind when empty) after the
// given version, oldest first.
func (t *tx) Changes(ctx context.Context, kind string, after int64, limit int) ([]store.Change, error) {
	if kind != "" {
		if _, err := store.New(kind); err != nil {
			return nil, fmt.Errorf("changes: %w", err)
		}
	}
	if limit <= 0 {
		return nil, fmt.Errorf("changes: %w: limit %d must be positive",
			store.ErrInvalidArgument, limit)
	}
	rows, err := t.query(ctx, `SELECT version, kind, name, type, object FROM changes
		WHERE version > ? AND (? = '' OR kind = ?) ORDER BY version LIMIT ?`,
		after, kind, kind, limit)
	if err != nil {
		return nil, fmt.Errorf("changes after %d: %w", after, err)
	}
	defer rows.Close()
	var out []store.Change
	for rows.Next() {
		var c store.Change
		var typ int
		var b []byte
		if err := rows.Scan(&c.Version, &c.Kind, &c.Name, &typ, &b); err != nil {
			return nil, fmt.Errorf("changes after %d: %w", after, err)
		}
		c.Type = store.ChangeType(typ)
		if c.Object, err = store.New(c.Kind); err != nil {
			return nil, fmt.Errorf("change %d: %w", c.Version, err)
		}
		if err := proto.Unmarshal(b, c.Object); err != nil {
			return nil, fmt.Errorf("decode change %d: %w", c.Version, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("changes after %d: %w", after, err)
	}
	return out, nil
}

// LatestVersion returns the highest version in the change log, or 0 when it is empty.
func (t *tx) LatestVersion(ctx context.Context) (int64, error) {
	var v int64
	err := t.queryRow(ctx, qLatestVersion).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("latest version: %w", err)
	}
	return v, nil
}

// PruneChanges deletes change-log entries older than maxAge, except the newest
// MinChangesKept entries, and returns how many it deleted. The server calls it periodically.
func (s *Store) PruneChanges(ctx context.Context, maxAge time.Duration) (int64, error) {
	if maxAge < 0 {
		return 0, fmt.Errorf("prune changes: %w: max age %v is negative",
			store.ErrInvalidArgument, maxAge)
	}
	cutoff := time.Now().Add(-maxAge).UnixNano()
	var deleted int64
	err := s.InTx(ctx, func(ctx context.Context, stx store.Tx) error {
		t := stx.(*tx)
		latest, err := t.LatestVersion(ctx)
		if err != nil {
			return err
		}
		res, err := t.exec(ctx,
			`DELETE FROM changes WHERE created_at < ? AND version <= ?`,
			cutoff, latest-MinChangesKept)
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune changes: %w", err)
	}
	return deleted, nil
}
