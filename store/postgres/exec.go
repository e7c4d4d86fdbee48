package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The statement helpers below remember the transaction's first failed statement in
// t.sqlErr, because after a failure PostgreSQL rejects every further statement of the
// transaction, and InTx must report (and retry) the first failure even when fn ignored it.
// pgx prepares and caches each distinct query text on its connection, so the hot statements
// are parsed once per connection.

func (t *tx) record(err error) error {
	if err != nil && t.sqlErr == nil && !errors.Is(err, pgx.ErrNoRows) {
		t.sqlErr = err
	}
	return err
}

func (t *tx) exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error) {
	tag, err := t.pg.Exec(ctx, q, args...)
	return tag, t.record(err)
}

func (t *tx) query(ctx context.Context, q string, args ...any) (pgx.Rows, error) {
	rows, err := t.pg.Query(ctx, q, args...)
	return rows, t.record(err)
}

// queryRow runs q and returns a row whose Scan records its error.
func (t *tx) queryRow(ctx context.Context, q string, args ...any) pgx.Row {
	return recordedRow{t: t, row: t.pg.QueryRow(ctx, q, args...)}
}

type recordedRow struct {
	t   *tx
	row pgx.Row
}

func (r recordedRow) Scan(dest ...any) error {
	return r.t.record(r.row.Scan(dest...))
}

// collect reads every row of rows with scan, closing rows, and records a failure.
func collect[T any](t *tx, rows pgx.Rows, scan func(pgx.Rows) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, t.record(err)
		}
		out = append(out, v)
	}
	return out, t.record(rows.Err())
}
