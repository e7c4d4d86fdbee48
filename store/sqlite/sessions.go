package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/internal/pagetoken"
)

// OpenSessions records that replica holds the agent streams of devices since at.
func (t *tx) OpenSessions(ctx context.Context, replica string, devices []string, at time.Time) error {
	if replica == "" {
		return fmt.Errorf("open sessions: %w: replica id is empty", store.ErrInvalidArgument)
	}
	for _, d := range devices {
		_, err := t.exec(ctx, `INSERT INTO agent_sessions (device, replica, opened_at)
			VALUES (?, ?, ?) ON CONFLICT (device) DO UPDATE
			SET replica = excluded.replica, opened_at = excluded.opened_at`,
			d, replica, at.UnixNano())
		if err != nil {
			return fmt.Errorf("open session of device %q: %w", d, err)
		}
	}
	return nil
}

// CloseSessions deletes the registry entries of devices that name replica, or every entry of
// replica when devices is nil.
func (t *tx) CloseSessions(ctx context.Context, replica string, devices []string) error {
	if devices == nil {
		if _, err := t.exec(ctx, `DELETE FROM agent_sessions WHERE replica = ?`, replica); err != nil {
			return fmt.Errorf("close sessions of replica %s: %w", replica, err)
		}
		return nil
	}
	for _, d := range devices {
		_, err := t.exec(ctx, `DELETE FROM agent_sessions WHERE device = ? AND replica = ?`,
			d, replica)
		if err != nil {
			return fmt.Errorf("close session of device %q: %w", d, err)
		}
	}
	return nil
}

// SessionHolders returns the replica holding the stream of each of devices that has one.
func (t *tx) SessionHolders(ctx context.Context, devices []string) (map[string]string, error) {
	holders := make(map[string]string, len(devices))
	for _, d := range devices {
		var replica string
		err := t.queryRow(ctx, `SELECT replica FROM agent_sessions WHERE device = ?`, d).
			Scan(&replica)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("session holder of device %q: %w", d, err)
		}
		holders[d] = replica
	}
	return holders, nil
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

	limit := pageSize(filter.Limit)
	rows, err := t.query(ctx, `SELECT device, replica, opened_at FROM agent_sessions
		WHERE device > ? AND (? = '' OR replica = ?) ORDER BY device LIMIT ?`,
		after[0], filter.Replica, filter.Replica, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	var sessions []store.Session
	for rows.Next() {
		var s store.Session
		var opened int64
		if err := rows.Scan(&s.Device, &s.Replica, &opened); err != nil {
			return nil, "", fmt.Errorf("list sessions: %w", err)
		}
		s.OpenedAt = time.Unix(0, opened)
		sessions = append(sessions, s)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list sessions: %w", err)
	}

	if len(sessions) <= limit {
		return sessions, "", nil
	}
	sessions = sessions[:limit]
	return sessions, pagetoken.Encode(sessionScope, sessions[limit-1].Device), nil
}
