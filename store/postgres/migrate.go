package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrations embed.FS

// lockVersion is the schema_migrations row that serves as the migration lock. No migration
// has this number.
const lockVersion = 0

// bootstrapAttempts bounds the retries of the statements that create schema_migrations.
// Two processes that run CREATE TABLE IF NOT EXISTS at the same moment can both pass the
// existence check, and then one fails with a unique violation or a duplicate table or type.
const bootstrapAttempts = 5

// migrate applies, in file-name order, each embedded migration not yet recorded in
// schema_migrations. A process holds the lock row (SELECT ... FOR UPDATE in a transaction
// on a connection of its own, outside the pool, so that a pool of one connection still
// works) while it applies migrations through the pool, so concurrent Opens apply each
// migration once. Each migration runs and is recorded in its own transaction.
func (s *Store) migrate(ctx context.Context, connConfig *pgx.ConnConfig) error {
	if err := s.bootstrapMigrations(ctx); err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	lock, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer lock.Rollback(context.WithoutCancel(ctx))
	_, err = lock.Exec(ctx, `SELECT version FROM schema_migrations WHERE version = $1 FOR UPDATE`,
		lockVersion)
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}

	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := s.applyMigration(ctx, name); err != nil {
			return err
		}
	}
	return lock.Commit(ctx)
}

// bootstrapMigrations creates schema_migrations and its lock row if they do not exist.
func (s *Store) bootstrapMigrations(ctx context.Context) error {
	var err error
	for range bootstrapAttempts {
		_, err = s.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT PRIMARY KEY,
			applied_at BIGINT NOT NULL)`)
		if err == nil {
			_, err = s.pool.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at)
				VALUES ($1, 0) ON CONFLICT (version) DO NOTHING`, lockVersion)
		}
		switch sqlState(err) {
		case uniqueViolation, duplicateTable, duplicateObject, serializationFailure:
			continue
		}
		break
	}
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	return nil
}

func (s *Store) applyMigration(ctx context.Context, name string) error {
	base := strings.TrimPrefix(name, "migrations/")
	num, _, ok := strings.Cut(base, "_")
	version, err := strconv.Atoi(num)
	if !ok || err != nil || version == lockVersion {
		return fmt.Errorf("migration %s: file name must start with a positive number and '_'",
			base)
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var applied bool
		err := tx.QueryRow(ctx,
			`SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, version).
			Scan(&applied)
		if err != nil || applied {
			return err
		}
		if _, err := tx.Exec(ctx, string(body)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at)
			VALUES ($1, $2)`, version, time.Now().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	return nil
}

// initShardCount stores the shard count of a new database, or loads the stored one.
func (s *Store) initShardCount(ctx context.Context, requested int) error {
	explicit := requested != 0
	if !explicit {
		requested = store.DefaultShardCount
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('shard_count', $1)
		ON CONFLICT (key) DO NOTHING`, strconv.Itoa(requested))
	if err != nil {
		return fmt.Errorf("shard count: store: %w", err)
	}
	var value string
	err = s.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'shard_count'`).Scan(&value)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("shard count: the row vanished after it was inserted")
	}
	if err != nil {
		return fmt.Errorf("shard count: %w", err)
	}
	n, err := strconv.Atoi(value)
	if err != nil || n <= 0 {
		return fmt.Errorf("shard count: stored value %q is not a positive integer", value)
	}
	s.shardCount = n
	if explicit && requested != n {
		s.log.Warn("shard count is fixed when the database is created; ignoring the option",
			"shard_count", n, "requested_shard_count", requested)
	}
	return nil
}
