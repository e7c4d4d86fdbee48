package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// preparedQueries lists the frequent statements that Open prepares once. Parsing a statement
// costs about as much as running it in modernc.org/sqlite, so the hot paths reuse these.
// Statements cannot be prepared lazily, because the only connection is busy while a
// transaction runs.
var preparedQueries []string

// prepared registers q for preparation at Open and returns it unchanged.
func prepared(q string) string {
	preparedQueries = append(preparedQueries, q)
	return q
}

// prepareAll prepares every registered statement on the database.
func (s *Store) prepareAll(ctx context.Context) error {
	s.stmts = make(map[string]*sql.Stmt, len(preparedQueries))
	for _, q := range preparedQueries {
		st, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		s.stmts[q] = st
	}
	return nil
}

// stmt returns the prepared form of q bound to the transaction, or nil when q is not prepared.
func (t *tx) stmt(ctx context.Context, q string) *sql.Stmt {
	if st, ok := t.s.stmts[q]; ok {
		return t.sql.StmtContext(ctx, st)
	}
	return nil
}

func (t *tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.sql.ExecContext(ctx, q, args...)
}

func (t *tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.sql.QueryContext(ctx, q, args...)
}

func (t *tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.sql.QueryRowContext(ctx, q, args...)
}
