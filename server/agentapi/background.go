package agentapi

import (
	"context"
	"errors"
	"maps"
	"math"
	"sync"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// sweepBatch is how many devices the sweep reads per transaction.
const sweepBatch = 500

// lastSeen collects the last time each device sent authenticated traffic, for batched writes.
type lastSeen struct {
	mu      sync.Mutex
	pending map[string]time.Time // guarded by mu
}

func newLastSeen() *lastSeen {
	return &lastSeen{pending: map[string]time.Time{}}
}

func (l *lastSeen) touch(device string) {
	now := time.Now()
	l.mu.Lock()
	l.pending[device] = now
	l.mu.Unlock()
}

// drain returns the collected times and starts a new collection.
func (l *lastSeen) drain() map[string]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.pending
	l.pending = map[string]time.Time{}
	return out
}

// restore puts back times that could not be written, keeping any newer ones.
func (l *lastSeen) restore(seen map[string]time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for device, t := range seen {
		if t.After(l.pending[device]) {
			l.pending[device] = t
		}
	}
}

// flushLastSeen writes the collected last-seen times in one transaction.
func (s *Service) flushLastSeen(ctx context.Context) {
	seen := s.seen.drain()
	if len(seen) == 0 {
		return
	}
	err := s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.SetLastSeen(ctx, maps.Clone(seen))
	})
	if err != nil {
		s.seen.restore(seen)
		s.log.WarnContext(ctx, "write last-seen times failed; retrying at the next flush",
			"devices", len(seen), "err", err)
	}
}

// sweepSessions signals every session whose device has a rendered version above the highest
// version the session has seen, to catch notifications that were missed or sent to another
// replica. It also ends the streams of devices that were deleted.
func (s *Service) sweepSessions(ctx context.Context) {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()

	for start := 0; start < len(sessions); start += sweepBatch {
		batch := sessions[start:min(start+sweepBatch, len(sessions))]
		var stale []*session
		err := s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			stale = stale[:0]
			for _, sess := range batch {
				latest, err := latestVersion(ctx, tx, sess.device)
				if err != nil {
					return err
				}
				if latest > sess.known.Load() {
					stale = append(stale, sess)
				}
				if latest > 0 {
					continue
				}
				// A deleted device loses its rendered spec, so only devices without one
				// need the extra read.
				_, err = tx.Get(ctx, store.KindDevice, sess.device)
				if errors.Is(err, store.ErrNotFound) {
					sess.deleted.Store(true)
					stale = append(stale, sess)
				} else if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				s.log.WarnContext(ctx, "sweep of connected devices failed", "err", err)
			}
			return
		}
		for _, sess := range stale {
			sess.signal()
		}
	}
}

// tokenBucket limits how many streams are admitted: it holds up to burst tokens, refills at
// rate tokens per second, and each admitted stream takes one.
type tokenBucket struct {
	rate  float64
	burst float64

	mu     sync.Mutex
	tokens float64   // guarded by mu
	last   time.Time // guarded by mu
}

func newTokenBucket(rate float64, burst int, now time.Time) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// allow takes a token if one is available at now.
func (b *tokenBucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = math.Min(b.burst, b.tokens+elapsed*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func timestampNow() *timestamppb.Timestamp {
	return timestamppb.Now()
}
