package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/storetest"
)

func openTemp(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fleetplane.db")
	s, err := Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, hook store.ChangeHook) store.Store {
		s, _ := openTemp(t, Options{ChangeHook: hook})
		return s
	})
}

func TestReopenKeepsData(t *testing.T) {
	s, path := openTemp(t, Options{ShardCount: 16})
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Create(ctx, &fleetplanev1.Device{Metadata: &fleetplanev1.ObjectMeta{Name: "d1"}})
		return err
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	reopened, err := Open(t.Context(), path, Options{ShardCount: 32})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer reopened.Close()
	err = reopened.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
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
}

func TestMigrationsIdempotent(t *testing.T) {
	s, path := openTemp(t, Options{})
	var before int
	q := `SELECT count(*) FROM schema_migrations`
	if err := s.db.QueryRowContext(t.Context(), q).Scan(&before); err != nil {
		t.Fatalf("count migrations: %v", err)
	}
	if err := s.migrate(t.Context()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	s.Close()
	again, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer again.Close()
	var after int
	if err := again.db.QueryRowContext(t.Context(), q).Scan(&after); err != nil {
		t.Fatalf("count migrations: %v", err)
	}
	if before == 0 || after != before {
		t.Errorf("schema_migrations has %d rows after reopening, %d before; want equal and > 0",
			after, before)
	}
}

func TestOpenInvalidOptions(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct {
		path string
		opts Options
	}{
		"empty path":     {"", Options{}},
		"query in path":  {filepath.Join(dir, "a.db?mode=ro"), Options{}},
		"negative count": {filepath.Join(dir, "b.db"), Options{ShardCount: -1}},
	}
	for name, c := range cases {
		if _, err := Open(t.Context(), c.path, c.opts); err == nil {
			t.Errorf("%s: Open succeeded; want an error", name)
		}
	}
}

func TestPruneChangesKeepsNewest(t *testing.T) {
	s, _ := openTemp(t, Options{})
	const total = MinChangesKept + 50
	// Change rows are inserted directly: creating this many objects is slow under -race.
	_, err := s.db.ExecContext(t.Context(), `WITH RECURSIVE n(i) AS (
			SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
		INSERT INTO changes (kind, name, type, object, created_at)
		SELECT 'Device', 'd' || i, 1, x'', 0 FROM n`, total)
	if err != nil {
		t.Fatalf("insert changes: %v", err)
	}
	deleted, err := s.PruneChanges(t.Context(), 0)
	if err != nil {
		t.Fatalf("PruneChanges: %v", err)
	}
	if deleted != 50 {
		t.Errorf("PruneChanges deleted %d; want 50", deleted)
	}
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		changes, err := tx.Changes(ctx, "", 0, 1)
		if err == nil && (len(changes) != 1 || changes[0].Version != 51) {
			t.Errorf("oldest change after pruning = %v; want version 51", changes)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
}

func BenchmarkCreateDevice(b *testing.B) {
	s, _ := openTemp(b, Options{})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			_, err := tx.Create(ctx, benchDevice(i))
			return err
		})
		if err != nil {
			b.Fatalf("Create: %v", err)
		}
	}
}

func BenchmarkListDevices(b *testing.B) {
	s, _ := openTemp(b, Options{})
	ctx := context.Background()
	const devices = 10000
	err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		for i := range devices {
			if _, err := tx.Create(ctx, benchDevice(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatalf("create devices: %v", err)
	}
	for _, bc := range []struct {
		name string
		opts store.ListOptions
	}{
		{"Page1000", store.ListOptions{Limit: 1000}},
		{"LabelSelector", store.ListOptions{Limit: 100, LabelSelector: "zone=z7"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
					_, err := tx.List(ctx, store.KindDevice, bc.opts)
					return err
				})
				if err != nil {
					b.Fatalf("List: %v", err)
				}
			}
		})
	}
}

func benchDevice(i int) *fleetplanev1.Device {
	return &fleetplanev1.Device{
		Metadata: &fleetplanev1.ObjectMeta{
			Name:   fmt.Sprintf("device-%07d", i),
			Labels: map[string]string{"env": "prod", "zone": fmt.Sprintf("z%d", i%10)},
		},
		Spec: &fleetplanev1.DeviceSpec{
			Os: &fleetplanev1.DeviceOsSpec{Image: "quay.io/example/os:1.0"},
			Applications: []*fleetplanev1.ApplicationProviderSpec{
				{Name: "app", Image: "quay.io/example/app:1.0", AppType: "compose"},
			},
		},
	}
}

func TestInTxCanceledContext(t *testing.T) {
	s, _ := openTemp(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	called := false
	err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		called = true
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("InTx with a canceled context: error = %v; want context.Canceled", err)
	}
	if called {
		t.Errorf("InTx ran fn under a canceled context")
	}
}

// TestTwoStoresOneFile checks that write transactions from two Stores on one file, as from two
// processes, wait for each other's lock instead of failing with SQLITE_BUSY.
func TestTwoStoresOneFile(t *testing.T) {
	first, path := openTemp(t, Options{})
	second, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("open second store: %v", err)
	}
	defer second.Close()

	const perStore = 100
	errs := make(chan error, 2*perStore)
	var wg sync.WaitGroup
	for i, s := range []*Store{first, second} {
		wg.Go(func() {
			for j := range perStore {
				errs <- s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
					if _, err := tx.LatestVersion(ctx); err != nil {
						return err
					}
					_, err := tx.Create(ctx, benchDevice(i*perStore+j))
					return err
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
	}
	err = first.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		changes, err := tx.Changes(ctx, "", 0, 3*perStore)
		if err == nil && len(changes) != 2*perStore {
			t.Errorf("change log has %d entries; want %d", len(changes), 2*perStore)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
}
