package postgres

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
)

// MinChangesKept is how many of the newest change-log entries PruneChanges always keeps, so
// that a watcher that falls briefly behind can still resume.
const MinChangesKept = 10000

// withChange returns a statement that runs mutation, a statement on the resources table with
// nargs parameters and without a RETURNING clause, and inserts a change-log entry from
// parameters nargs+1 to nargs+7 when mutation wrote a row. One statement saves a round trip
// on every write.
func withChange(mutation string, nargs int) string {
	p := func(i int) string { return "$" + strconv.Itoa(nargs+i) }
	return `WITH written AS (` + mutation + ` RETURNING 1)
		INSERT INTO changes (id, version, kind, name, type, object, created_at)
		SELECT ` + strings.Join([]string{p(1), p(2), p(3), p(4), p(5), p(6), p(7)}, ", ") +
		` FROM written`
}

// writeChange runs q, made by withChange, with the mutation's args and the entry for c. It
// returns false when the mutation wrote no row, and then logs no change.
func (t *tx) writeChange(ctx context.Context, q string, args []any, c store.Change) (bool, error) {
	b, err := marshal.Marshal(c.Object)
	if err != nil {
		return false, fmt.Errorf("encode change %d: %w", c.Version, err)
	}
	args = append(args, newUUID(), c.Version, c.Kind, c.Name, int16(c.Type), b,
		time.Now().UnixNano())
	tag, err := t.exec(ctx, q, args...)
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	t.notify = true
	return true, nil
}

// runHook runs the change hook on c. A hook failure is also kept in t so that InTx rolls back.
func (t *tx) runHook(ctx context.Context, c store.Change) error {
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

// newUUID returns a random (version 4) UUID, which pgx encodes from a [16]byte.
func newUUID() [16]byte {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// Changes returns up to limit change-log entries of kind (every kind when empty) after the
// given version, oldest first. See the package documentation for entries that commit late.
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
	q := `SELECT version, kind, name, type, object FROM changes
		WHERE version > $1 ORDER BY version LIMIT $2`
	args := []any{after, limit}
	if kind != "" {
		q = `SELECT version, kind, name, type, object FROM changes
			WHERE kind = $3 AND version > $1 ORDER BY version LIMIT $2`
		args = append(args, kind)
	}
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("changes after %d: %w", after, err)
	}
	out, err := collect(t, rows, scanChange)
	if err != nil {
		return nil, fmt.Errorf("changes after %d: %w", after, err)
	}
	return out, nil
}

func scanChange(rows pgx.Rows) (store.Change, error) {
	var c store.Change
	var typ int16
	var b []byte
	if err := rows.Scan(&c.Version, &c.Kind, &c.Name, &typ, &b); err != nil {
		return c, err
	}
	c.Type = store.ChangeType(typ)
	var err error
	if c.Object, err = store.New(c.Kind); err != nil {
		return c, fmt.Errorf("change %d: %w", c.Version, err)
	}
	if err := proto.Unmarshal(b, c.Object); err != nil {
		return c, fmt.Errorf("decode change %d: %w", c.Version, err)
	}
	return c, nil
}

// LatestVersion returns the highest version in the change log, or 0 when it is empty.
func (t *tx) LatestVersion(ctx context.Context) (int64, error) {
	var v int64
	err := t.queryRow(ctx, `SELECT coalesce(max(version), 0) FROM changes`).Scan(&v)
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
		// The version of the MinChangesKept-th newest entry; older ones may go.
		var keepFrom int64
		err := t.queryRow(ctx, `SELECT coalesce((SELECT version FROM changes
			ORDER BY version DESC OFFSET $1 LIMIT 1), 0)`, MinChangesKept-1).Scan(&keepFrom)
		if err != nil {
			return err
		}
		tag, err := t.exec(ctx, `DELETE FROM changes WHERE created_at < $1 AND version < $2`,
			cutoff, keepFrom)
		deleted = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune changes: %w", err)
	}
	return deleted, nil
}
