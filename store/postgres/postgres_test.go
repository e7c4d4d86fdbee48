package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/internal/pgtest"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/storetest"
)

func TestMain(m *testing.M) {
	pgtest.Main(m)
}

// openStore opens a store on dsn and closes it when the test ends.
func openStore(tb testing.TB, dsn string, opts Options) *Store {
	tb.Helper()
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// openTemp opens a store on a new database of the shared server.
func openTemp(tb testing.TB, opts Options) (*Store, string) {
	tb.Helper()
	dsn := pgtest.Shared(tb).NewDatabase(tb)
	return openStore(tb, dsn, opts), dsn
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, hook store.ChangeHook) store.Store {
		s, _ := openTemp(t, Options{ChangeHook: hook})
		return s
	})
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	s, dsn := openTemp(t, Options{ShardCount: 16})
	created := createDevice(t, s, "d1")
	s.Close()

	reopened := openStore(t, dsn, Options{ShardCount: 32})
	err := reopened.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Get(ctx, store.KindDevice, "d1"); err != nil {
			return err
		}
		n, err := tx.ShardCount(ctx)
		if n != 16 {
			t.Errorf("ShardCount after reopen with 32 = %d; want the original 16", n)
		}
		return err
	})
	if err != nil {
		t.Fatalf("read after reopen: %v", err)
	}
	updated := updateDevice(t, reopened, "d1", "img-2")
	if versionOf(t, updated) <= versionOf(t, created) {
		t.Errorf("version after reopen %s is not above %s",
			store.Meta(updated).ResourceVersion, store.Meta(created).ResourceVersion)
	}
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Shared(t).NewDatabase(t)
	const opens = 4
	errs := make([]error, opens)
	var wg sync.WaitGroup
	for i := range opens {
		wg.Go(func() {
			s, err := Open(t.Context(), dsn, Options{})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	s := openStore(t, dsn, Options{})
	var rows int
	err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&rows)
	if err != nil {
		t.Fatalf("count schema_migrations: %v", err)
	}
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + len(files); rows != want { // the lock row and one row per migration
		t.Errorf("schema_migrations has %d rows; want %d", rows, want)
	}
}

func TestOpenInvalidOptions(t *testing.T) {
	cases := map[string]struct {
		dsn  string
		opts Options
	}{
		"empty DSN":         {"", Options{}},
		"malformed DSN":     {"postgres://[::1", Options{}},
		"negative shards":   {"postgres://127.0.0.1/x", Options{ShardCount: -1}},
		"negative max":      {"postgres://127.0.0.1/x", Options{MaxConns: -1}},
		"min above max":     {"postgres://127.0.0.1/x", Options{MaxConns: 2, MinConns: 3}},
		"negative retries":  {"postgres://127.0.0.1/x", Options{MaxRetries: -1}},
		"unknown parameter": {"postgres://127.0.0.1/x?pool_max_conns=many", Options{}},
		"other scheme":      {"mysql://user@127.0.0.1/x", Options{}},
		"negative timeout":  {"postgres://127.0.0.1/x", Options{IdleInTransactionTimeout: -1}},
	}
	for name, c := range cases {
		_, err := Open(t.Context(), c.dsn, c.opts)
		if !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("%s: Open error = %v; want ErrInvalidArgument", name, err)
		}
	}
}

func TestOpenUnreachableSaysConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = Open(t.Context(), "postgres://nobody@"+addr+"/fleetplane?connect_timeout=5", Options{})
	if err == nil || !strings.Contains(err.Error(), "connect to "+addr+"/fleetplane") {
		t.Errorf("Open of an address without a server: error = %v; want one naming the address", err)
	}
}

func TestOpenKeepsPasswordOutOfErrors(t *testing.T) {
	s := pgtest.Shared(t)
	dsn := fmt.Sprintf("postgres://nobody:s3cr3t-pw@127.0.0.1:%d/missing_db?sslmode=disable",
		s.Port())
	_, err := Open(t.Context(), dsn, Options{})
	if err == nil {
		t.Fatalf("Open of a missing database succeeded")
	}
	if msg := err.Error(); strings.Contains(msg, "s3cr3t-pw") {
		t.Errorf("Open error contains the password: %s", msg)
	}
}

func TestPoolSizeOption(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t, Options{MaxConns: 1})
	if got := s.pool.Config().MaxConns; got != 1 {
		t.Errorf("pool MaxConns = %d; want 1", got)
	}
	createDevice(t, s, "d1")
}

func TestTextWithNULInvalid(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t, Options{})
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Create(ctx, device("bad\x00name"))
		return err
	})
	if !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("Create with a NUL in the name: error = %v; want ErrInvalidArgument", err)
	}
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Get(ctx, store.KindDevice, "bad\x00name")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get with a NUL in the name: error = %v; want ErrNotFound", err)
	}
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.EnqueueTask(ctx, "TestTask", "bad\xffkey", time.Now())
		return err
	})
	if !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("EnqueueTask with invalid UTF-8 in the key: error = %v; want "+
			"ErrInvalidArgument", err)
	}
}

func device(name string) *fleetplanev1.Device {
	return &fleetplanev1.Device{
		Metadata: &fleetplanev1.ObjectMeta{Name: name},
		Spec:     &fleetplanev1.DeviceSpec{Os: &fleetplanev1.DeviceOsSpec{Image: "img-1"}},
	}
}
