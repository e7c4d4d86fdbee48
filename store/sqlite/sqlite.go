package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetplane/fleetplane/store"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrations embed.FS

// busyTimeout is how long a transaction waits for the write lock held by another process.
const busyTimeout = 10 * time.Second

// Options configures Open.
type Options struct {
	// ChangeHook runs inside the transaction of every resource write.
	ChangeHook store.ChangeHook
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
	// ShardCount is the number of task shards of a new database; zero means
	// store.DefaultShardCount. An existing database keeps the count it was created with.
	ShardCount int
}

// Store is a store.Store on one SQLite database file.
type Store struct {
	db         *sql.DB
	hook       store.ChangeHook
	log        *slog.Logger
	shardCount int
	stmts      map[string]*sql.Stmt // prepared at Open; see preparedQueries

	mu     sync.Mutex
	subs   map[int]chan struct{} // guarded by mu
	nextID int                   // guarded by mu
}

var _ store.Store = (*Store)(nil)

// Open opens or creates the database at path, applies pending migrations and fixes the shard
// count on first use.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open sqlite store: %w: path is empty", store.ErrInvalidArgument)
	}
	if strings.Contains(path, "?") {
		return nil, fmt.Errorf("open sqlite store %q: %w: path must not contain '?'",
			path, store.ErrInvalidArgument)
	}
	if opts.ShardCount < 0 {
		return nil, fmt.Errorf("open sqlite store: %w: shard count %d is negative",
			store.ErrInvalidArgument, opts.ShardCount)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %q: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &Store{db: db, hook: opts.ChangeHook, log: log, subs: map[int]chan struct{}{}}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %q: %w", path, err)
	}
	if err := s.initShardCount(ctx, opts.ShardCount); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %q: %w", path, err)
	}
	if err := s.prepareAll(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite store %q: %w", path, err)
	}
	return s, nil
}

func dsn(path string) string {
	q := url.Values{}
	q.Set("_txlock", "immediate")
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	return path + "?" + q.Encode()
}

// migrate applies, in file-name order, each embedded migration not yet recorded in
// schema_migrations, each in its own transaction.
func (s *Store) migrate(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL)`)
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
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
	return nil
}

func (s *Store) applyMigration(ctx context.Context, name string) error {
	base := strings.TrimPrefix(name, "migrations/")
	num, _, ok := strings.Cut(base, "_")
	version, err := strconv.Atoi(num)
	if !ok || err != nil {
		return fmt.Errorf("migration %s: file name must start with a number and '_'", base)
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %s: begin: %w", base, err)
	}
	defer tx.Rollback()
	var applied int
	err = tx.QueryRowContext(ctx,
		`SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&applied)
	if err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	if applied > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		version, time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("migration %s: record: %w", base, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %s: commit: %w", base, err)
	}
	return nil
}

// initShardCount stores the shard count of a new database, or loads the stored one.
func (s *Store) initShardCount(ctx context.Context, requested int) error {
	if requested == 0 {
		requested = store.DefaultShardCount
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("shard count: begin: %w", err)
	}
	defer tx.Rollback()
	var value string
	err = tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'shard_count'`).Scan(&value)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('shard_count', ?)`,
			strconv.Itoa(requested))
		if err != nil {
			return fmt.Errorf("shard count: store: %w", err)
		}
		s.shardCount = requested
	case err != nil:
		return fmt.Errorf("shard count: %w", err)
	default:
		n, err := strconv.Atoi(value)
		if err != nil || n <= 0 {
			return fmt.Errorf("shard count: stored value %q is not a positive integer", value)
		}
		s.shardCount = n
		if requested != n {
			s.log.Warn("shard count is fixed when the database is created; ignoring the option",
				"shard_count", n, "requested_shard_count", requested)
		}
	}
	return tx.Commit()
}

// InTx runs fn in one transaction on the single writer connection. See the package
// documentation for the concurrency model. Calling InTx from inside fn deadlocks.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) error {
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = sqlTx.Rollback()
		}
	}()

	t := &tx{s: s, sql: sqlTx}
	if err := fn(ctx, t); err != nil {
		return err
	}
	if t.hookErr != nil {
		return fmt.Errorf("transaction rolled back after a change hook failed: %w", t.hookErr)
	}
	if fence, ok := store.FenceFrom(ctx); ok {
		if err := t.CheckLease(ctx, fence); err != nil {
			return err
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	committed = true
	if t.notify {
		s.broadcast()
	}
	return nil
}

// Subscribe returns a channel that receives a value after each commit in this process that
// wrote a change or a task.
func (s *Store) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	s.subs[id] = ch
	s.mu.Unlock()
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, id)
			s.mu.Unlock()
		})
	}
	return ch, cancel
}

func (s *Store) broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Close closes the database.
func (s *Store) Close() error {
	return s.db.Close()
}

// tx is one transaction. It implements store.Tx.
type tx struct {
	s   *Store
	sql *sql.Tx
	// hookErr is the first change hook failure. InTx rolls back when it is set.
	hookErr error
	// notify is set once the transaction wrote a change or a task.
	notify bool
}

var _ store.Tx = (*tx)(nil)
