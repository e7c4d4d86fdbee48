package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	"github.com/fleetplane/fleetplane/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// DefaultMaxRetries is how often InTx retries a transaction after serialization failures
// before it gives up, unless Options.MaxRetries sets another number.
const DefaultMaxRetries = 30

// Retry backoff: the n-th retry waits a random time up to min(retryBackoffBase << n,
// retryBackoffMax), so that transactions that keep colliding spread out.
const (
	retryBackoffBase = time.Millisecond
	retryBackoffMax  = 100 * time.Millisecond
)

// Options configures Open.
type Options struct {
	// ChangeHook runs inside the transaction of every resource write.
	ChangeHook store.ChangeHook
	// Logger receives retries and warnings; nil discards them.
	Logger *slog.Logger
	// ShardCount is the number of task shards of a new database; zero means
	// store.DefaultShardCount. An existing database keeps the count it was created with.
	ShardCount int
	// MaxConns and MinConns size the connection pool. Zero keeps the DSN's pool_max_conns
	// and pool_min_conns, or pgxpool's defaults (the larger of 4 and the number of CPUs, and 0).
	MaxConns, MinConns int32
	// MaxRetries is how often a transaction is retried after serialization failures. Zero
	// means DefaultMaxRetries.
	MaxRetries int
	// MeterProvider creates the store's metrics; nil means the global provider.
	MeterProvider metric.MeterProvider
	// IdleInTransactionTimeout ends a session whose transaction has waited this long for its
	// client, which releases its locks. Zero means DefaultIdleInTransactionTimeout; a DSN that
	// sets idle_in_transaction_session_timeout keeps its value.
	IdleInTransactionTimeout time.Duration
}

// DefaultIdleInTransactionTimeout bounds how long a stopped or partitioned replica can hold
// row locks that other replicas wait for. The store's transactions take milliseconds, so
// only a client that stopped mid-transaction reaches it.
const DefaultIdleInTransactionTimeout = 10 * time.Second

// Stats are counters since Open.
type Stats struct {
	// Transactions counts InTx calls that committed.
	Transactions int64
	// Retries counts transaction attempts that were run again after a serialization failure.
	Retries int64
}

// Store is a store.Store on a PostgreSQL or CockroachDB database.
type Store struct {
	pool       *pgxpool.Pool
	hook       store.ChangeHook
	log        *slog.Logger
	shardCount int
	maxRetries int
	clock      *versionClock

	commits       atomic.Int64
	retries       atomic.Int64
	retryCounter  metric.Int64Counter
	commitCounter metric.Int64Counter

	mu     sync.Mutex
	subs   map[int]chan struct{} // guarded by mu
	nextID int                   // guarded by mu
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn (a postgres:// URL or key=value string), applies
// pending migrations and fixes the shard count on first use.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := parseOptions(dsn, opts)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		hook:       opts.ChangeHook,
		log:        log,
		maxRetries: opts.MaxRetries,
		subs:       map[int]chan struct{}{},
	}
	if s.maxRetries == 0 {
		s.maxRetries = DefaultMaxRetries
	}
	if err := s.initMetrics(opts.MeterProvider); err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}

	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("open postgres store: connect to %s: %w; check that the "+
			"server runs and that the DSN's host, port, user and database are right",
			redactedHost(cfg), err)
	}
	if err := s.init(ctx, cfg.ConnConfig.Copy(), opts.ShardCount); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("open postgres store on %s: %w", redactedHost(cfg), err)
	}
	log.InfoContext(ctx, "opened postgres store", "database", redactedHost(cfg),
		"shard_count", s.shardCount, "max_conns", cfg.MaxConns, "version_node", s.clock.node)
	return s, nil
}

// parseOptions checks opts and builds the pool configuration.
func parseOptions(dsn string, opts Options) (*pgxpool.Config, error) {
	switch {
	case dsn == "":
		return nil, fmt.Errorf("open postgres store: %w: DSN is empty; pass a URL such as "+
			"postgres://user@host:5432/fleetplane", store.ErrInvalidArgument)
	case opts.ShardCount < 0:
		return nil, fmt.Errorf("open postgres store: %w: shard count %d is negative",
			store.ErrInvalidArgument, opts.ShardCount)
	case opts.MaxConns < 0 || opts.MinConns < 0:
		return nil, fmt.Errorf("open postgres store: %w: pool sizes %d and %d must not be "+
			"negative", store.ErrInvalidArgument, opts.MaxConns, opts.MinConns)
	case opts.MaxConns > 0 && opts.MinConns > opts.MaxConns:
		return nil, fmt.Errorf("open postgres store: %w: MinConns %d is above MaxConns %d",
			store.ErrInvalidArgument, opts.MinConns, opts.MaxConns)
	case opts.MaxRetries < 0:
		return nil, fmt.Errorf("open postgres store: %w: MaxRetries %d is negative",
			store.ErrInvalidArgument, opts.MaxRetries)
	case opts.IdleInTransactionTimeout < 0:
		return nil, fmt.Errorf("open postgres store: %w: IdleInTransactionTimeout %v is negative",
			store.ErrInvalidArgument, opts.IdleInTransactionTimeout)
	}
	if scheme, _, ok := strings.Cut(dsn, "://"); ok && scheme != "postgres" && scheme != "postgresql" {
		return nil, fmt.Errorf("open postgres store: %w: DSN scheme %q is not supported; use "+
			"postgres://user@host:5432/fleetplane", store.ErrInvalidArgument, scheme)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors leave the password out of their message.
		return nil, fmt.Errorf("open postgres store: %w: invalid DSN: %v",
			store.ErrInvalidArgument, err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.MinConns > 0 {
		cfg.MinConns = opts.MinConns
	}
	// PostgreSQL and CockroachDB both take this setting as a startup parameter, in ms.
	const idleParam = "idle_in_transaction_session_timeout"
	if _, set := cfg.ConnConfig.RuntimeParams[idleParam]; !set {
		timeout := opts.IdleInTransactionTimeout
		if timeout == 0 {
			timeout = DefaultIdleInTransactionTimeout
		}
		cfg.ConnConfig.RuntimeParams[idleParam] = strconv.FormatInt(timeout.Milliseconds(), 10)
	}
	return cfg, nil
}

// redactedHost names the server for error messages, without user or password.
func redactedHost(cfg *pgxpool.Config) string {
	return fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port,
		cfg.ConnConfig.Database)
}

func (s *Store) initMetrics(mp metric.MeterProvider) error {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter("github.com/fleetplane/fleetplane/store/postgres")
	var err error
	// The Prometheus exporter names this counter fleetplane_store_tx_retries_total.
	s.retryCounter, err = meter.Int64Counter("fleetplane.store.tx.retries",
		metric.WithDescription("Store transactions run again after a serialization failure."),
		metric.WithUnit("{retry}"))
	if err != nil {
		return err
	}
	// Exported as fleetplane_store_tx_commits_total; retries divided by commits plus retries
	// is the share of transaction attempts that a serialization failure undid.
	s.commitCounter, err = meter.Int64Counter("fleetplane.store.tx.commits",
		metric.WithDescription("Store transactions committed."),
		metric.WithUnit("{commit}"))
	if err != nil {
		return err
	}
	// The retry counter is exported at zero from the start, so that alerts on it see a series.
	s.retryCounter.Add(context.Background(), 0,
		metric.WithAttributes(attribute.String("backend", "postgres")))
	return nil
}

// init applies migrations, loads the shard count and starts the version clock above the
// newest stored version.
func (s *Store) init(ctx context.Context, connConfig *pgx.ConnConfig, shardCount int) error {
	if err := s.migrate(ctx, connConfig); err != nil {
		return err
	}
	if err := s.initShardCount(ctx, shardCount); err != nil {
		return err
	}
	var latest int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM changes`).Scan(&latest)
	if err != nil {
		return fmt.Errorf("read latest version: %w", err)
	}
	s.clock = newVersionClock(latest)
	return nil
}

// InTx runs fn in one SERIALIZABLE transaction. When the database reports a serialization
// failure (SQLSTATE 40001) during fn or at commit, fn runs again in a new transaction, up to
// MaxRetries times. The package documentation explains the retries.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) error {
	var t *tx
	attempt := 0
	err := crdb.ExecuteCtx(crdb.WithMaxRetries(ctx, s.maxRetries),
		func(ctx context.Context, _ ...any) error {
			if attempt > 0 {
				if err := s.beforeRetry(ctx, attempt); err != nil {
					return err
				}
			}
			attempt++
			t = &tx{s: s}
			return retryDeadlock(s.attempt(ctx, t, fn))
		})
	if err != nil {
		var maxErr *crdb.MaxRetriesExceededError
		if errors.As(err, &maxErr) {
			s.log.WarnContext(ctx, "store transaction gave up after serialization failures",
				"attempts", attempt, "err", err)
		}
		return err
	}
	s.commits.Add(1)
	s.commitCounter.Add(ctx, 1, metric.WithAttributes(attribute.String("backend", "postgres")))
	if t.notify {
		s.broadcast()
	}
	return nil
}

// beforeRetry counts a retry and waits a jittered, growing time before it.
func (s *Store) beforeRetry(ctx context.Context, attempt int) error {
	s.retries.Add(1)
	s.retryCounter.Add(ctx, 1, metric.WithAttributes(attribute.String("backend", "postgres")))
	s.log.DebugContext(ctx, "retrying store transaction after a serialization failure",
		"attempt", attempt+1)
	wait := min(retryBackoffBase<<min(attempt, 16), retryBackoffMax)
	timer := time.NewTimer(rand.N(wait) + 1)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// attempt runs fn once in a new transaction and commits it.
func (s *Store) attempt(ctx context.Context, t *tx, fn func(context.Context, store.Tx) error) error {
	pg, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer pg.Rollback(context.WithoutCancel(ctx)) // does nothing after a commit
	t.pg = pg

	if err := fn(ctx, t); err != nil {
		return t.retryable(err)
	}
	if t.hookErr != nil {
		return fmt.Errorf("transaction rolled back after a change hook failed: %w", t.hookErr)
	}
	if fence, ok := store.FenceFrom(ctx); ok {
		if err := t.CheckLease(ctx, fence); err != nil {
			return t.retryable(err)
		}
	}
	if t.sqlErr != nil {
		// fn went on after a statement failed, and PostgreSQL rolls such a transaction back.
		return fmt.Errorf("transaction rolled back after a failed statement: %w", t.sqlErr)
	}
	if err := pg.Commit(ctx); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{Transactions: s.commits.Load(), Retries: s.retries.Load()}
}

// Subscribe returns a channel that receives a value after each commit in this process that
// wrote a change or a task. Commits by other processes are not signalled.
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

// Close closes every connection of the pool, waiting for connections in use to be returned.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// tx is one attempt of a transaction. It implements store.Tx.
type tx struct {
	s  *Store
	pg pgx.Tx
	// hookErr is the first change hook failure. InTx rolls back when it is set.
	hookErr error
	// sqlErr is the first failed statement. PostgreSQL aborts the transaction after it.
	sqlErr error
	// notify is set once the transaction wrote a change or a task.
	notify bool
}

var _ store.Tx = (*tx)(nil)

// retryable returns err, or the serialization failure or deadlock that a statement of t
// reported if fn returned some other error in its place, so that InTx still retries.
func (t *tx) retryable(err error) error {
	first := sqlState(t.sqlErr)
	if (first == serializationFailure || first == deadlockDetected) && sqlState(err) != first {
		return fmt.Errorf("%w (later error: %v)", t.sqlErr, err)
	}
	return err
}

// retryDeadlock marks a deadlock as retryable. crdb.ExecuteCtx retries only serialization
// failures, but PostgreSQL aborts one of two transactions that lock rows in opposite orders
// with deadlock_detected, and running that transaction again is just as safe.
func retryDeadlock(err error) error {
	if sqlState(err) == deadlockDetected {
		return retryableError{err}
	}
	return err
}

// retryableError reports SQLSTATE 40001, which crdb.ExecuteCtx retries, for the error it
// wraps.
type retryableError struct{ err error }

func (e retryableError) Error() string    { return e.err.Error() }
func (e retryableError) Unwrap() error    { return e.err }
func (e retryableError) SQLState() string { return serializationFailure }

// SQLSTATE codes that the store handles.
const (
	deadlockDetected     = "40P01"
	serializationFailure = "40001"
	uniqueViolation      = "23505"
	duplicateTable       = "42P07"
	duplicateObject      = "42710"
)

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
