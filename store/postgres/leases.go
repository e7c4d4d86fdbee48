package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"github.com/jackc/pgx/v5"
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
	out, err := collect(t, rows, func(r pgx.Rows) (store.Lease, error) { return scanLease(r) })
	if err != nil {
		return nil, fmt.Errorf("leases: %w", err)
	}
	return out, nil
}

func scanLease(row pgx.Row) (store.Lease, error) {
	var l store.Lease
	var expires int64
	err := row.Scan(&l.Shard, &l.Owner, &l.Epoch, &expires)
	l.ExpiresAt = time.Unix(0, expires)
	return l, err
}

// getLease returns the lease row of shard, with found false when the shard never had one.
func (t *tx) getLease(ctx context.Context, shard int) (l store.Lease, found bool, err error) {
	l, err = scanLease(t.queryRow(ctx,
		`SELECT shard, owner, epoch, expires_at FROM shard_leases WHERE shard = $1`, shard))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Lease{Shard: shard}, false, nil
	}
	if err != nil {
		return l, false, err
	}
	return l, true, nil
}

// AcquireLease gives shard to owner until expires when the lease is free, expired at now, or
// already owner's. A change of owner increments the epoch, and a renewal keeps it.
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
	if err := checkText("owner", owner); err != nil {
		return store.Lease{}, fmt.Errorf("lease shard %d: %w", shard, err)
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
		_, err = t.exec(ctx, `UPDATE shard_leases SET owner = $1, epoch = $2, expires_at = $3
			WHERE shard = $4`, owner, next.Epoch, expires.UnixNano(), shard)
	} else {
		_, err = t.exec(ctx, `INSERT INTO shard_leases (shard, owner, epoch, expires_at)
			VALUES ($1, $2, $3, $4)`, shard, owner, next.Epoch, expires.UnixNano())
	}
	if err != nil {
		return store.Lease{}, fmt.Errorf("lease shard %d: %w", shard, err)
	}
	return next, nil
}

// ReleaseLease frees shard if owner still holds it at epoch, and otherwise does nothing. The
// row stays, with its epoch, so that the next owner gets a higher epoch.
func (t *tx) ReleaseLease(ctx context.Context, shard int, owner string, epoch int64) error {
	if checkText("owner", owner) != nil {
		return nil // no lease has such an owner
	}
	_, err := t.exec(ctx, `UPDATE shard_leases SET owner = '', expires_at = 0
		WHERE shard = $1 AND owner = $2 AND epoch = $3`, shard, owner, epoch)
	if err != nil {
		return fmt.Errorf("release lease shard %d: %w", shard, err)
	}
	return nil
}

// CheckLease returns ErrFenced unless fence's owner holds the shard at fence's epoch. It
// ignores the expiry time. An expired lease that no other replica took over is still safe to
// write under, because a new owner always gets a new epoch. The read puts the lease row in
// the transaction's read set, so a concurrent takeover makes one of the two transactions
// fail with a serialization failure.
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
	if err := errors.Join(checkText("replica id", r.ID), checkText("address", r.Address)); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	_, err := t.exec(ctx, `INSERT INTO replicas (id, address, started_at, heartbeat_at,
			connected_agents) VALUES ($1, $2, $3, $4, $5)
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
	rows, err := t.query(ctx, `SELECT id, address, started_at, heartbeat_at, connected_agents
		FROM replicas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("replicas: %w", err)
	}
	out, err := collect(t, rows, func(row pgx.Rows) (store.Replica, error) {
		var r store.Replica
		var started, heartbeat int64
		err := row.Scan(&r.ID, &r.Address, &started, &heartbeat, &r.ConnectedAgents)
		r.StartedAt, r.HeartbeatAt = time.Unix(0, started), time.Unix(0, heartbeat)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("replicas: %w", err)
	}
	return out, nil
}

// RemoveReplica deletes a replica's membership row. Removing an unknown replica does nothing.
func (t *tx) RemoveReplica(ctx context.Context, id string) error {
	if checkText("replica id", id) != nil {
		return nil
	}
	if _, err := t.exec(ctx, `DELETE FROM replicas WHERE id = $1`, id); err != nil {
		return fmt.Errorf("remove replica %s: %w", id, err)
	}
	return nil
}
