package dispatcher

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// BenchmarkDispatch measures tasks per second through a SQLite file with a handler that does
// nothing. Each iteration is one task; keys are triggered in batches of 100 per transaction,
// and each key is triggered twice, so the second trigger coalesces.
func BenchmarkDispatch(b *testing.B) {
	st := openStore(b, tempDB(b))
	cfg := testConfig(b, st, "bench")
	cfg.Logger = nil // per-lease log lines would fill the benchmark output
	cfg.Workers = 8
	cfg.LeaseDuration = 15 * time.Second
	cfg.PollInterval = 100 * time.Millisecond
	d := newDispatcher(b, cfg)
	var done atomic.Int64
	d.Register("noop", func(ctx context.Context, key string) error {
		done.Add(1)
		return nil
	})
	start(b, d)
	waitFor(b, 10*time.Second, "shards held", func() bool {
		return len(heldBy(b, st, "bench")) == testShards
	})

	before := d.Stats()
	b.ResetTimer()
	began := time.Now()
	const batch = 100
	for i := 0; i < b.N; i += batch {
		n := min(batch, b.N-i)
		err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
			for j := range n {
				key := fmt.Sprintf("key-%d", i+j)
				for range 2 {
					if err := Trigger(ctx, tx, "noop", key); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("trigger: %v", err)
		}
	}
	waitFor(b, time.Minute, "every task to run", func() bool { return done.Load() >= int64(b.N) })
	elapsed := time.Since(began)
	b.StopTimer()

	after := d.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(float64(after.TriggersCoalesced-before.TriggersCoalesced)/float64(b.N),
		"coalesced/task")
}
