package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
)

const (
	qGetResource = `SELECT ` + resourceColumns + ` ` + resourceFrom +
		` WHERE r.kind = $1 AND r.name = $2`
	// ON CONFLICT DO NOTHING reports a taken name without failing the transaction.
	qCreateResource = `INSERT INTO resources (kind, name, labels, annotations, owner,
			generation, resource_version, created_at, deleted_at, spec, status)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (kind, name) DO NOTHING`
	qUpdateResource = `UPDATE resources SET labels = $3, annotations = $4, owner = $5,
			generation = $6, resource_version = $7, deleted_at = $8, spec = $9, status = $10
		WHERE kind = $1 AND name = $2`
	qDeleteResource = `DELETE FROM resources WHERE kind = $1 AND name = $2`
)

// The resource writes, each with its change-log entry in the same statement.
var (
	qCreateWithChange = withChange(qCreateResource, 11)
	qUpdateWithChange = withChange(qUpdateResource, 10)
	qDeleteWithChange = withChange(qDeleteResource, 2)
)

// Get returns the named object, or ErrNotFound.
func (t *tx) Get(ctx context.Context, kind, name string) (store.Object, error) {
	if _, err := store.New(kind); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	row, err := t.getRow(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	return row.object()
}

func (t *tx) getRow(ctx context.Context, kind, name string) (*resourceRow, error) {
	if checkText("name", name) != nil {
		// No stored object has such a name, and PostgreSQL rejects it as a parameter.
		return nil, fmt.Errorf("%s %q: %w", lower(kind), name, store.ErrNotFound)
	}
	row, err := scanResource(t.queryRow(ctx, qGetResource, kind, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s %q: %w", lower(kind), name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %q: %w", lower(kind), name, err)
	}
	return row, nil
}

// Create stores a new object with generation 1 and a new resource version.
func (t *tx) Create(ctx context.Context, obj store.Object) (store.Object, error) {
	kind, name, err := identify(obj)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	m := store.Meta(obj)
	row := &resourceRow{
		kind:        kind,
		name:        name,
		labels:      encodeMap(m.Labels),
		annotations: encodeMap(m.Annotations),
		owner:       m.Owner,
		generation:  1,
		version:     t.s.clock.next(0),
		createdAt:   time.Now().UnixNano(),
	}
	if row.spec, err = encodeSpec(obj); err != nil {
		return nil, fmt.Errorf("create %s %q: encode spec: %w", lower(kind), name, err)
	}
	if row.status, err = encodeStatus(obj); err != nil {
		return nil, fmt.Errorf("create %s %q: encode status: %w", lower(kind), name, err)
	}

	args := []any{row.kind, row.name, row.labels, row.annotations, row.owner, row.generation,
		row.version, row.createdAt, row.deletedAt, row.spec, row.status}
	return t.write(ctx, "create", qCreateWithChange, args, row, nil, store.Added)
}

// Update replaces labels, annotations, owner and spec, keeping status and creation time.
func (t *tx) Update(ctx context.Context, obj store.Object) (store.Object, error) {
	kind, name, err := identify(obj)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	stored, old, err := t.loadForWrite(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	spec, err := encodeSpec(obj)
	if err != nil {
		return nil, fmt.Errorf("update %s %q: encode spec: %w", lower(kind), name, err)
	}

	m := store.Meta(obj)
	row := *stored
	row.labels = encodeMap(m.Labels)
	row.annotations = encodeMap(m.Annotations)
	row.owner = m.Owner
	if string(spec) != string(stored.spec) {
		row.generation++
		row.spec = spec
	}
	return t.update(ctx, "update", &row, old)
}

// UpdateStatus replaces only the status.
func (t *tx) UpdateStatus(ctx context.Context, obj store.Object) (store.Object, error) {
	kind, name, err := identify(obj)
	if err != nil {
		return nil, fmt.Errorf("update status: %w", err)
	}
	stored, old, err := t.loadForWrite(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("update status: %w", err)
	}
	row := *stored
	if row.status, err = encodeStatus(obj); err != nil {
		return nil, fmt.Errorf("update status of %s %q: encode status: %w", lower(kind), name, err)
	}
	return t.update(ctx, "update status", &row, old)
}

// loadForWrite reads the stored row of obj and checks obj's resource version against it.
func (t *tx) loadForWrite(ctx context.Context, obj store.Object) (*resourceRow, store.Object, error) {
	kind, name := store.KindOf(obj), store.Meta(obj).Name
	want, err := parseVersion(kind, name, store.Meta(obj).ResourceVersion)
	if err != nil {
		return nil, nil, err
	}
	stored, err := t.getRow(ctx, kind, name)
	if err != nil {
		return nil, nil, err
	}
	if want != 0 && want != stored.version {
		return nil, nil, fmt.Errorf("%s %q: %w; get it again and retry",
			lower(kind), name, store.ErrConflict)
	}
	old, err := stored.object()
	if err != nil {
		return nil, nil, err
	}
	return stored, old, nil
}

// update stores row under a new version above the stored one and logs the change.
func (t *tx) update(
	ctx context.Context, op string, row *resourceRow, old store.Object,
) (store.Object, error) {
	row.version = t.s.clock.next(row.version)
	args := []any{row.kind, row.name, row.labels, row.annotations, row.owner, row.generation,
		row.version, row.deletedAt, row.spec, row.status}
	return t.write(ctx, op, qUpdateWithChange, args, row, old, store.Modified)
}

// write runs q, made by withChange, to store row with its change-log entry, and then runs
// the change hook. It returns ErrAlreadyExists when q wrote no row, which only a create can
// cause, because update and delete read the row earlier in the transaction.
func (t *tx) write(
	ctx context.Context, op, q string, args []any, row *resourceRow, old store.Object,
	typ store.ChangeType,
) (store.Object, error) {
	// row holds everything the stored object has, including the device's last-seen time
	// that Update and UpdateStatus copied from the stored row, so there is no need to read
	// it back.
	obj, err := row.object()
	if err != nil {
		return nil, err
	}
	c := store.Change{
		Version: row.version, Type: typ, Kind: row.kind, Name: row.name, Object: obj, Old: old,
	}
	written, err := t.writeChange(ctx, q, args, c)
	if err != nil {
		return nil, fmt.Errorf("%s %s %q: %w", op, lower(row.kind), row.name, err)
	}
	if !written {
		return nil, fmt.Errorf("%s %q: %w; choose another name or update the existing one",
			lower(row.kind), row.name, store.ErrAlreadyExists)
	}
	if err := t.runHook(ctx, c); err != nil {
		return nil, fmt.Errorf("%s %s %q: %w", op, lower(row.kind), row.name, err)
	}
	return obj, nil
}

// Delete removes the named object and returns its last state, whose resource version is the
// version of the deletion.
func (t *tx) Delete(ctx context.Context, kind, name string) (store.Object, error) {
	if _, err := store.New(kind); err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	stored, err := t.getRow(ctx, kind, name)
	if err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	old, err := stored.object()
	if err != nil {
		return nil, err
	}
	if kind == store.KindDevice {
		_, err = t.exec(ctx, `DELETE FROM device_last_seen WHERE name = $1`, name)
		if err != nil {
			return nil, fmt.Errorf("delete %s %q: last seen: %w", lower(kind), name, err)
		}
	}

	version := t.s.clock.next(stored.version)
	obj := proto.Clone(old)
	store.Meta(obj).ResourceVersion = strconv.FormatInt(version, 10)
	c := store.Change{
		Version: version, Type: store.Deleted, Kind: kind, Name: name, Object: obj, Old: old,
	}
	if _, err := t.writeChange(ctx, qDeleteWithChange, []any{kind, name}, c); err != nil {
		return nil, fmt.Errorf("delete %s %q: %w", lower(kind), name, err)
	}
	if err := t.runHook(ctx, c); err != nil {
		return nil, fmt.Errorf("delete %s %q: %w", lower(kind), name, err)
	}
	return obj, nil
}

// deleteBatch is how many names DeleteAll reads at a time.
const deleteBatch = 500

// DeleteAll removes every object of a kind, one change each, and returns how many there were.
func (t *tx) DeleteAll(ctx context.Context, kind string) (int64, error) {
	if _, err := store.New(kind); err != nil {
		return 0, fmt.Errorf("delete all: %w", err)
	}
	var deleted int64
	for {
		rows, err := t.query(ctx,
			`SELECT name FROM resources WHERE kind = $1 ORDER BY name LIMIT $2`, kind, deleteBatch)
		if err != nil {
			return deleted, fmt.Errorf("delete all %s: %w", lower(kind), err)
		}
		names, err := collect(t, rows, func(r pgx.Rows) (string, error) {
			var n string
			return n, r.Scan(&n)
		})
		if err != nil {
			return deleted, fmt.Errorf("delete all %s: %w", lower(kind), err)
		}
		for _, name := range names {
			if _, err := t.Delete(ctx, kind, name); err != nil {
				return deleted, fmt.Errorf("delete all %s: %w", lower(kind), err)
			}
			deleted++
		}
		if len(names) < deleteBatch {
			return deleted, nil
		}
	}
}

// SetLastSeen records when devices last sent authenticated traffic, in one statement. A time
// older than the stored one and a device that does not exist are ignored.
func (t *tx) SetLastSeen(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	names := make([]string, 0, len(seen))
	times := make([]int64, 0, len(seen))
	for name, at := range seen {
		if checkText("device name", name) != nil {
			continue // no device has such a name
		}
		names = append(names, name)
		times = append(times, at.UnixNano())
	}
	_, err := t.exec(ctx, `INSERT INTO device_last_seen (name, seen_at)
		SELECT s.name, s.seen_at FROM unnest($1::TEXT[], $2::BIGINT[]) AS s (name, seen_at)
		WHERE EXISTS (SELECT 1 FROM resources WHERE kind = 'Device' AND name = s.name)
		ON CONFLICT (name) DO UPDATE
		SET seen_at = greatest(device_last_seen.seen_at, excluded.seen_at)`, names, times)
	if err != nil {
		return fmt.Errorf("set last seen of %d devices: %w", len(names), err)
	}
	return nil
}
