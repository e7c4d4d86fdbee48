package tasks

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/dispatcher"
	"github.com/fleetplane/fleetplane/store"
)

// runStats counts what a dispatcher did since startDispatcher.
type runStats struct {
	TasksRun  int64
	Triggers  int64
	Coalesced int64
}

// startDispatcher runs a dispatcher with the tasks registered, with short lease, poll and
// backoff times, until the test ends. It returns a function that reads the dispatcher's
// counters. Trigger counts are process-wide, so they are taken relative to the start.
func startDispatcher(t testing.TB, st store.Store, deps Deps) func() runStats {
	t.Helper()
	d, err := dispatcher.New(dispatcher.Config{
		Store:         st,
		LeaseDuration: 2 * time.Second,
		PollInterval:  50 * time.Millisecond,
		BackoffBase:   10 * time.Millisecond,
		BackoffMax:    200 * time.Millisecond,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("new dispatcher: %v", err)
	}
	deps.Store = st
	Register(d, deps)
	start := d.Stats()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher run: %v", err)
		}
	})
	return func() runStats {
		now := d.Stats()
		return runStats{
			TasksRun:  now.TasksRun,
			Triggers:  now.Triggers - start.Triggers,
			Coalesced: now.TriggersCoalesced - start.TriggersCoalesced,
		}
	}
}
