package store

import (
	"context"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// RenderTx stores the specs rendered for device agents, apart from the Device resource so that a
// render does not change the device's resource version.
type RenderTx interface {
	// GetRendered returns the device's rendered spec, or ErrNotFound if it was never rendered.
	GetRendered(ctx context.Context, device string) (*fleetplanev1.RenderedDeviceSpec, error)
	// PutRendered stores spec as the device's rendered spec if its ContentHash differs from the
	// stored one. The rendered version then becomes the stored version plus one (starting at 1),
	// and changed is true. Otherwise nothing is written and the stored version is returned.
	PutRendered(ctx context.Context, device string, spec *fleetplanev1.RenderedDeviceSpec) (version int64, changed bool, err error)
	// DeleteRendered removes a device's rendered spec.
	DeleteRendered(ctx context.Context, device string) error
}
