package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
)

// GetRendered returns the device's rendered spec with its rendered_version set, or ErrNotFound
// when it was never rendered or was deleted.
func (t *tx) GetRendered(ctx context.Context, device string) (*fleetplanev1.RenderedDeviceSpec, error) {
	if checkText("device name", device) != nil {
		return nil, fmt.Errorf("rendered spec of device %q: %w", device, store.ErrNotFound)
	}
	var version int64
	var b []byte
	err := t.queryRow(ctx, `SELECT version, spec FROM rendered_devices
		WHERE name = $1 AND content_hash != ''`, device).Scan(&version, &b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("rendered spec of device %q: %w", device, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get rendered spec of device %q: %w", device, err)
	}
	spec := &fleetplanev1.RenderedDeviceSpec{}
	if err := proto.Unmarshal(b, spec); err != nil {
		return nil, fmt.Errorf("decode rendered spec of device %q: %w", device, err)
	}
	spec.RenderedVersion = strconv.FormatInt(version, 10)
	return spec, nil
}

// PutRendered stores spec as the device's rendered spec when its content hash changed.
func (t *tx) PutRendered(
	ctx context.Context, device string, spec *fleetplanev1.RenderedDeviceSpec,
) (int64, bool, error) {
	if device == "" {
		return 0, false, fmt.Errorf("put rendered spec: %w: device name is empty",
			store.ErrInvalidArgument)
	}
	if err := checkText("device name", device); err != nil {
		return 0, false, fmt.Errorf("put rendered spec: %w", err)
	}
	if spec.GetContentHash() == "" {
		return 0, false, fmt.Errorf("put rendered spec of device %q: %w: content_hash is "+
			"empty; hash the rendered content", device, store.ErrInvalidArgument)
	}
	if err := checkText("content_hash", spec.ContentHash); err != nil {
		return 0, false, fmt.Errorf("put rendered spec of device %q: %w", device, err)
	}
	var version int64
	var hash string
	err := t.queryRow(ctx,
		`SELECT version, content_hash FROM rendered_devices WHERE name = $1`, device).
		Scan(&version, &hash)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("put rendered spec of device %q: %w", device, err)
	}
	if err == nil && hash == spec.ContentHash {
		return version, false, nil
	}

	version++
	stored := proto.Clone(spec).(*fleetplanev1.RenderedDeviceSpec)
	stored.RenderedVersion = strconv.FormatInt(version, 10)
	b, err := marshal.Marshal(stored)
	if err != nil {
		return 0, false, fmt.Errorf("encode rendered spec of device %q: %w", device, err)
	}
	_, err = t.exec(ctx, `INSERT INTO rendered_devices (name, version, content_hash, spec)
		VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET version = excluded.version,
		content_hash = excluded.content_hash, spec = excluded.spec`,
		device, version, spec.ContentHash, b)
	if err != nil {
		return 0, false, fmt.Errorf("put rendered spec of device %q: %w", device, err)
	}
	return version, true, nil
}

// DeleteRendered removes a device's rendered spec. Deleting a missing one does nothing. The
// row stays with an empty hash and spec, so that a later render of a device with the same
// name continues from the deleted version, because an agent never applies a version lower
// than its own.
func (t *tx) DeleteRendered(ctx context.Context, device string) error {
	if checkText("device name", device) != nil {
		return nil // no such device was rendered
	}
	_, err := t.exec(ctx, `UPDATE rendered_devices SET content_hash = '', spec = ''::BYTEA
		WHERE name = $1`, device)
	if err != nil {
		return fmt.Errorf("delete rendered spec of device %q: %w", device, err)
	}
	return nil
}
