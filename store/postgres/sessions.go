package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/internal/pagetoken"
)

// OpenSessions records that replica holds the agent streams of devices since at, in one
// statement.
func (t *tx) OpenSessions(ctx context.Context, replica string, devices []string, at time.Time) error {
	if replica == "" {
		return fmt.Errorf("open sessions: %w: replica id is empty", store.ErrInvalidArgument)
	}
	if err := checkText("replica id", replica); err != nil {
		return err
	}
	devices = storableNames(devices)
	if len(devices) == 0 {
		return nil
	}
	_, err := t.exec(ctx, `INSERT INTO agent_sessions (device, replica, opened_at)
		SELECT d, $2, $3 FROM unnest($1::TEXT[]) AS d
		ON CONFLICT (device) DO UPDATE
		SET replica = excluded.replica, opened_at = excluded.opened_at`,
		devices, replica, at.UnixNano())
	if err != nil {
		return fmt.Errorf("open sessions of %d devices: %w", len(devices), err)
	}
	return nil
}

// CloseSessions deletes the registry entries of devices that name replica, or every entry of
// replica when devices is nil.
func (t *tx) CloseSessions(ctx context.Context, replica string, devices []string) error {
	if checkText("replica id", replica) != nil {
		return nil // no session names such a replica
	}
	if devices == nil {
		if _, err := t.exec(ctx, `DELETE FROM agent_sessions WHERE replica = $1`, replica); err != nil {
			return fmt.Errorf("close sessions of replica %s: %w", replica, err)
		}
		return nil
	}
	devices = storableNames(devices)
	if len(devices) == 0 {
		return nil
	}
	_, err := t.exec(ctx, `DELETE FROM agent_sessions
		WHERE device = ANY($1::TEXT[]) AND replica = $2`, devices, replica)
	if err != nil {
		return fmt.Errorf("close sessions of %d devices: %w", len(devices), err)
	}
	return nil
}

// SessionHolders returns the replica holding the stream of each of devices that has one.
func (t *tx) SessionHolders(ctx context.Context, devices []string) (map[string]string, error) {
	holders := make(map[string]string, len(devices))
	devices = storableNames(devices)
	if len(devices) == 0 {
		return holders, nil
	}
	rows, err := t.query(ctx, `SELECT device, replica FROM agent_sessions
		WHERE device = ANY($1::TEXT[])`, devices)
	if err != nil {
		return nil, fmt.Errorf("session holders: %w", err)
	}
	type holder struct{ device, replica string }
	found, err := collect(t, rows, func(row pgx.Rows) (holder, error) {
		var h holder
		err := row.Scan(&h.device, &h.replica)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("session holders: %w", err)
	}
	for _, h := range found {
		holders[h.device] = h.replica
	}
	return holders, nil
}

// storableNames returns the names that a TEXT column can hold; no stored row has another.
func storableNames(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if checkText("device name", n) == nil {
			out = append(out, n)
		}
	}
	return out
}

const sessionScope = "sessions"

// ListSessions returns one page of the session registry in device name order.
func (t *tx) ListSessions(ctx context.Context, filter store.SessionFilter) ([]store.Session, string, error) {
	after, err := pagetoken.Decode(filter.PageToken, sessionScope, 1)
	if err != nil {
		return nil, "", fmt.Errorf("list sessions: %w", err)
	}
	if after == nil {
		after = []string{""}
	}
	if err := checkText("page token", after[0]); err != nil {
		return nil, "", fmt.Errorf("list sessions: %w", err)
	}
	if checkText("replica id", filter.Replica) != nil {
		return nil, "", nil // no session names such a replica
	}

	limit := pageSize(filter.Limit)
	rows, err := t.query(ctx, `SELECT device, replica, opened_at FROM agent_sessions
		WHERE device > $1 AND ($2 = '' OR replica = $2) ORDER BY device LIMIT $3`,
		after[0], filter.Replica, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list sessions: %w", err)
	}
	sessions, err := collect(t, rows, func(row pgx.Rows) (store.Session, error) {
		var s store.Session
		var opened int64
		err := row.Scan(&s.Device, &s.Replica, &opened)
		s.OpenedAt = time.Unix(0, opened)
		return s, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list sessions: %w", err)
	}

	if len(sessions) <= limit {
		return sessions, "", nil
	}
	sessions = sessions[:limit]
	return sessions, pagetoken.Encode(sessionScope, sessions[limit-1].Device), nil
}
