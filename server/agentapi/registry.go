package agentapi

import (
	"context"
	"sync"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// sessionLog collects the streams opened (true) and closed (false) since the last write to the
// session registry; only the latest state of each device counts.
type sessionLog struct {
	mu      sync.Mutex
	pending map[string]bool // guarded by mu
}

func (l *sessionLog) set(device string, open bool) {
	l.mu.Lock()
	l.pending[device] = open
	l.mu.Unlock()
}

// drain returns the collected states and starts a new collection.
func (l *sessionLog) drain() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.pending
	l.pending = map[string]bool{}
	return out
}

// restore puts back states that could not be written, unless a newer one arrived meanwhile.
func (l *sessionLog) restore(states map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for device, open := range states {
		if _, newer := l.pending[device]; !newer {
			l.pending[device] = open
		}
	}
}

// flushSessions writes the collected stream openings and closings in one transaction.
func (s *Service) flushSessions(ctx context.Context) {
	states := s.sessLog.drain()
	if len(states) == 0 {
		return
	}
	var opened, closed []string
	for device, open := range states {
		if open {
			opened = append(opened, device)
		} else {
			closed = append(closed, device)
		}
	}
	now := time.Now()
	err := s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if len(closed) > 0 {
			if err := tx.CloseSessions(ctx, s.replica, closed); err != nil {
				return err
			}
		}
		if len(opened) > 0 {
			return tx.OpenSessions(ctx, s.replica, opened, now)
		}
		return nil
	})
	if err != nil {
		s.sessLog.restore(states)
		s.log.WarnContext(ctx, "write session registry failed; retrying at the next flush",
			"opened", len(opened), "closed", len(closed), "err", err)
	}
}

// clearSessions removes every registry entry of this replica.
func (s *Service) clearSessions(ctx context.Context) {
	err := s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.CloseSessions(ctx, s.replica, nil)
	})
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "clear session registry failed", "replica", s.replica, "err", err)
	}
}
