package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fleetplane/fleetplane/store"
)

// ShardCount returns the number of shards, fixed when the database was created.
func (t *tx) ShardCount(context.Context) (int, error) {
	return t.s.shardCount, nil
}

// Leases returns the held shard leases ordered by shard. A released shard keeps a row with an
// empty owner, to remember its epoch, and is left out.
func (t *tx) Leases(ctx context.Context) ([]store.Lease, error) {
	rows, err := t.query(ctx, `SELECT shard, owner, epoch, expires_at FROM shard_leases
		WHERE owner != '' ORDER BY shard`)
	if err != nil {
		return nil, fmt.Errorf("leases: %w", err)
	}
	defer rows.Close()
	var out []store.Lease
	for rows.Next() {
		var l store.Lease
		var expires int64
		if err := rows.Scan(&l.Shard, &l.Owner, &l.Epoch, &expires); err != nil {
			return nil, fmt.Errorf("leases: %w", err)
		}
		l.ExpiresAt = time.Unix(0, expires)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("leases: %w", err)
	}
	return out, nil
}

var qGetLease = prepared(`SELECT shard, owner, epoch, expires_at FROM shard_leases
	WHERE shard = ?`)

// getLease returns the lease row of shard; found is false when the shard never had one.
func (t *tx) getLease(ctx context.Context, shard int) (l store.Lease, found bool, err error) {
	var expires int64
	err = t.queryRow(ctx, qGetLease, shard).Scan(&l.Shard, &l.Owner, &l.Epoch, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Lease{Shard: shard}, false, nil
	}
	if err != nil {
		return l, false, err
	}
	l.ExpiresAt = time.Unix(0, expires)
	return l, true, nil
}

// AcquireLease gives shard to owner until expires when the lease is free, expired at now, or
// already owner's. A change of owner increments the epoch; a renewal keeps it.
func (t *tx) AcquireLease(
	ctx context.Context, shard int, owner string, now, expires time.Time,
) (store.Lease, error) {
	if shard < 0 || shard >= t.s.shardCount {
		return store.Lease{}, fmt.Errorf("lease shard %d: %w: shard must be in [0, %d)",
			shard, store.ErrInvalidArgument, t.s.shardCount)
	}
	if owner == "" {
		return store.Lease{}, fmt.Errorf("lease shard %d: %w: owner is empty",
			shard, store.ErrInvalidArgument)
	}
	cur, found, err := t.getLease(ctx, shard)
	if err != nil {
		return store.Lease{}, fmt.Errorf("lease shard %d: %w", shard, err)
	}
	active := cur.Owner != "" && cur.ExpiresAt.After(now)
	if active && cur.Owner != owner {
		return store.Lease{}, fmt.Errorf("lease shard %d: held by %s until %s: %w",
			shard, cur.Owner, cur.ExpiresAt.UTC().Format(time.RFC3339Nano), store.ErrConflict)
	}

	next := store.Lease{Shard: shard, Owner: owner, Epoch: cur.Epoch, ExpiresAt: expires}
	if cur.Owner != owner {
		next.Epoch++
	}
	if found {
		_, err = t.exec(ctx, `UPDATE shard_leases SET owner = ?, epoch = ?,
			expires_at = ? WHERE shard = ?`, owner, next.Epoch, expires.UnixNano(), shard)
	} else {
		_, err = t.exec(ctx, `INSERT INTO shard_leases (shard, owner, epoch, expires_at)
			VALUES (?, ?, ?, ?)`, shard, owner, next.Epoch, expires.UnixNano())
	}
	if err != nil {
		return store.Lease{}, fmt.Errorf("lease shard %d: %w", shard, err)
	}
	return next, nil
}

// ReleaseLease frees shard if owner still holds it at epoch, and otherwise does nothing. The
// row stays, with its epoch, so that the next owner gets a higher epoch.
func (t *tx) ReleaseLease(ctx context.Context, shard int, owner string, epoch int64) error {
	_, err := t.exec(ctx, `UPDATE shard_leases SET owner = '', expires_at = 0
		WHERE shard = ? AND owner = ? AND epoch = ?`, shard, owner, epoch)
	if err != nil {
		return fmt.Errorf("release lease shard %d: %w", shard, err)
	}
	return nil
}

// CheckLease returns ErrFenced unless fence's owner holds the shard at fence's epoch. It ignores
// the expiry time. An expired lease that no other replica took over is still safe to write
// under, because a new owner always gets a new epoch.
func (t *tx) CheckLease(ctx context.Context, fence store.Fence) error {
	cur, _, err := t.getLease(ctx, fence.Shard)
	if err != nil {
		return fmt.Errorf("check lease shard %d: %w", fence.Shard, err)
	}
	if cur.Owner != fence.Owner || cur.Epoch != fence.Epoch || fence.Owner == "" {
		return fmt.Errorf("lease shard %d: %w: owner %q at epoch %d no longer holds the "+
			"lease; stop work on this shard", fence.Shard, store.ErrFenced, fence.Owner, fence.Epoch)
	}
	return nil
}

// Heartbeat inserts or refreshes a replica's membership row.
func (t *tx) Heartbeat(ctx context.Context, r store.Replica) error {
	if r.ID == "" {
		return fmt.Errorf("heartbeat: %w: replica id is empty", store.ErrInvalidArgument)
	}
	_, err := t.exec(ctx, `INSERT INTO replicas (id, address, started_at,
			heartbeat_at, connected_agents) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET address = excluded.address,
			started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
			connected_agents = excluded.connected_agents`,
		r.ID, r.Address, r.StartedAt.UnixNano(), r.HeartbeatAt.UnixNano(), r.ConnectedAgents)
	if err != nil {
		return fmt.Errorf("heartbeat of replica %s: %w", r.ID, err)
	}
	return nil
}

// Replicas returns every registered replica ordered by id.
func (t *tx) Replicas(ctx context.Context) ([]store.Replica, error) {
	rows, err := t.query(ctx, `SELECT id, address, started_at, heartbeat_at,
		connected_agents FROM replicas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("replicas: %w", err)
	}
	defer rows.Close()
	var out []store.Replica
	for rows.Next() {
		var r store.Replica
		var started, heartbeat int64
		err := rows.Scan(&r.ID, &r.Address, &started, &heartbeat, &r.ConnectedAgents)
		if err != nil {
			return nil, fmt.Errorf("replicas: %w", err)
		}
		r.StartedAt, r.HeartbeatAt = time.Unix(0, started), time.Unix(0, heartbeat)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("replicas: %w", err)
	}
	return out, nil
}

// RemoveReplica deletes a replica's membership row. Removing an unknown replica does nothing.
func (t *tx) RemoveReplica(ctx context.Context, id string) error {
	if _, err := t.exec(ctx, `DELETE FROM replicas WHERE id = ?`, id); err != nil {
		return fmt.Errorf("remove replica %s: %w", id, err)
	}
	return nil
}
