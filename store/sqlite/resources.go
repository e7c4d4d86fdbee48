package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
)

var (
	qGetResource = prepared(`SELECT ` + resourceColumns + ` ` + resourceFrom +
		` WHERE r.kind = ? AND r.name = ?`)
	qCountResource  = prepared(`SELECT count(*) FROM resources WHERE kind = ? AND name = ?`)
	qUpsertResource = prepared(`INSERT INTO resources (kind, name, labels, annotations,
			owner, generation, resource_version, created_at, deleted_at, spec, status)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (kind, name) DO UPDATE SET labels = excluded.labels,
			annotations = excluded.annotations, owner = excluded.owner,
			generation = excluded.generation, resource_version = excluded.resource_version,
			deleted_at = excluded.deleted_at, spec = excluded.spec, status = excluded.status`)
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
	row, err := scanResource(t.queryRow(ctx, qGetResource, kind, name))
	if errors.Is(err, sql.ErrNoRows) {
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
	var exists int
	err = t.queryRow(ctx, qCountResource, kind, name).Scan(&exists)
	if err != nil {
		return nil, fmt.Errorf("create %s %q: %w", lower(kind), name, err)
	}
	if exists > 0 {
		return nil, fmt.Errorf("%s %q: %w; choose another name or update the existing one",
			lower(kind), name, store.ErrAlreadyExists)
	}

	m := store.Meta(obj)
	row := &resourceRow{
		kind:        kind,
		name:        name,
		labels:      encodeMap(m.Labels),
		annotations: encodeMap(m.Annotations),
		owner:       m.Owner,
		generation:  1,
		createdAt:   time.Now().UnixNano(),
	}
	if row.spec, err = encodeSpec(obj); err != nil {
		return nil, fmt.Errorf("create %s %q: encode spec: %w", lower(kind), name, err)
	}
	if row.status, err = encodeStatus(obj); err != nil {
		return nil, fmt.Errorf("create %s %q: encode status: %w", lower(kind), name, err)
	}
	return t.write(ctx, "create", row, nil, store.Added)
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
	return t.write(ctx, "update", &row, old, store.Modified)
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
	return t.write(ctx, "update status", &row, old, store.Modified)
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

// write allocates a version, stores row under it, logs the change and runs the change hook.
func (t *tx) write(
	ctx context.Context, op string, row *resourceRow, old store.Object, typ store.ChangeType,
) (store.Object, error) {
	version, err := t.appendChange(ctx, row.kind, row.name, typ)
	if err != nil {
		return nil, fmt.Errorf("%s %s %q: %w", op, lower(row.kind), row.name, err)
	}
	row.version = version
	_, err = t.exec(ctx, qUpsertResource, row.kind, row.name, row.labels, row.annotations, row.owner, row.generation, row.version,
		row.createdAt, row.deletedAt, row.spec, row.status)
	if err != nil {
		return nil, fmt.Errorf("%s %s %q: %w", op, lower(row.kind), row.name, err)
	}
	// row holds everything the stored object has, including the device's last-seen time that
	// Update and UpdateStatus copied from the stored row, so there is no need to read it back.
	obj, err := row.object()
	if err != nil {
		return nil, err
	}
	if err := t.finishChange(ctx, store.Change{
		Version: version, Type: typ, Kind: row.kind, Name: row.name, Object: obj, Old: old,
	}); err != nil {
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
	version, err := t.appendChange(ctx, kind, name, store.Deleted)
	if err != nil {
		return nil, fmt.Errorf("delete %s %q: %w", lower(kind), name, err)
	}
	_, err = t.exec(ctx, `DELETE FROM resources WHERE kind = ? AND name = ?`, kind, name)
	if err != nil {
		return nil, fmt.Errorf("delete %s %q: %w", lower(kind), name, err)
	}
	if kind == store.KindDevice {
		_, err = t.exec(ctx, `DELETE FROM device_last_seen WHERE name = ?`, name)
		if err != nil {
			return nil, fmt.Errorf("delete %s %q: last seen: %w", lower(kind), name, err)
		}
	}

	obj := proto.Clone(old)
	store.Meta(obj).ResourceVersion = strconv.FormatInt(version, 10)
	if err := t.finishChange(ctx, store.Change{
		Version: version, Type: store.Deleted, Kind: kind, Name: name, Object: obj, Old: old,
	}); err != nil {
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
		names, err := t.names(ctx, kind, deleteBatch)
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

func (t *tx) names(ctx context.Context, kind string, limit int) ([]string, error) {
	rows, err := t.query(ctx,
		`SELECT name FROM resources WHERE kind = ? ORDER BY name LIMIT ?`, kind, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// SetLastSeen records when devices last sent authenticated traffic. A time older than the
// stored one and a device that does not exist are ignored.
func (t *tx) SetLastSeen(ctx context.Context, seen map[string]time.Time) error {
	for name, at := range seen {
		_, err := t.exec(ctx, `INSERT INTO device_last_seen (name, seen_at)
			SELECT ?, ? WHERE EXISTS (SELECT 1 FROM resources WHERE kind = 'Device' AND name = ?)
			ON CONFLICT (name) DO UPDATE
			SET seen_at = max(device_last_seen.seen_at, excluded.seen_at)`,
			name, at.UnixNano(), name)
		if err != nil {
			return fmt.Errorf("set last seen of device %q: %w", name, err)
		}
	}
	return nil
}

// identify returns obj's kind and name, or an error if the kind is unknown or the name empty.
func identify(obj store.Object) (kind, name string, err error) {
	if obj == nil {
		return "", "", fmt.Errorf("%w: object is nil", store.ErrInvalidArgument)
	}
	kind = store.KindOf(obj)
	if _, err := store.New(kind); err != nil {
		return "", "", err
	}
	name = store.Meta(obj).Name
	if name == "" {
		return "", "", fmt.Errorf("%s: %w: metadata.name is missing; set a name",
			lower(kind), store.ErrInvalidArgument)
	}
	return kind, name, nil
}

// lower turns a kind into lower-case words for messages: "TemplateVersion" becomes
// "template version".
func lower(kind string) string {
	var b strings.Builder
	for i, r := range kind {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
