package agentapi

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/store"
)

// errOtherDevice is the PERMISSION_DENIED error for a request about another device. It names
// neither device.
var errOtherDevice = connect.NewError(connect.CodePermissionDenied,
	errors.New("a device certificate grants access only to its own device; set name to the "+
		"certificate's common name"))

// deviceService is DeviceService restricted to the calling device: GetDevice,
// GetRenderedDevice and UpdateDeviceStatus for its own name. Every other method is
// UNIMPLEMENTED through the embedded handler.
type deviceService struct {
	fleetplanev1connect.UnimplementedDeviceServiceHandler
	s *Service
}

// authorize checks that ctx carries a device certificate for name.
func authorize(ctx context.Context, name string) error {
	device, ok := identity.DeviceFromContext(ctx)
	if !ok {
		return errNoCertificate
	}
	if name == "" {
		return invalidArgument("name", "must be set to the device's own name")
	}
	if name != device {
		return errOtherDevice
	}
	return nil
}

// GetDevice returns the caller's own device.
func (d *deviceService) GetDevice(
	ctx context.Context, req *connect.Request[fleetplanev1.GetDeviceRequest],
) (*connect.Response[fleetplanev1.GetDeviceResponse], error) {
	if err := authorize(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	var device *fleetplanev1.Device
	err := d.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		device, err = getDevice(ctx, tx, req.Msg.GetName())
		return err
	})
	if err != nil {
		return nil, deviceError(req.Msg.GetName(), err)
	}
	return connect.NewResponse(&fleetplanev1.GetDeviceResponse{Device: device}), nil
}

// GetRenderedDevice returns the caller's rendered spec.
func (d *deviceService) GetRenderedDevice(
	ctx context.Context, req *connect.Request[fleetplanev1.GetRenderedDeviceRequest],
) (*connect.Response[fleetplanev1.GetRenderedDeviceResponse], error) {
	name := req.Msg.GetName()
	if err := authorize(ctx, name); err != nil {
		return nil, err
	}
	var rendered *fleetplanev1.RenderedDeviceSpec
	err := d.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := getDevice(ctx, tx, name); err != nil {
			return err
		}
		var err error
		rendered, err = tx.GetRendered(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return connect.NewError(connect.CodeNotFound,
				fmt.Errorf("device %s has no rendered spec yet; wait for the stream to send one", name))
		}
		return err
	})
	if err != nil {
		return nil, deviceError(name, err)
	}
	return connect.NewResponse(&fleetplanev1.GetRenderedDeviceResponse{Rendered: rendered}), nil
}

// UpdateDeviceStatus replaces the status fields that the agent owns, as a status message on
// the stream does. The fields the server owns (applied rendered version, updated status,
// server conditions) keep their stored values.
func (d *deviceService) UpdateDeviceStatus(
	ctx context.Context, req *connect.Request[fleetplanev1.UpdateDeviceStatusRequest],
) (*connect.Response[fleetplanev1.UpdateDeviceStatusResponse], error) {
	name := req.Msg.GetName()
	if err := authorize(ctx, name); err != nil {
		return nil, err
	}
	if req.Msg.GetStatus() == nil {
		return nil, invalidArgument("status", "must be set")
	}
	d.s.seen.touch(name)
	device, err := d.s.updateDeviceStatus(ctx, name, req.Msg.GetResourceVersion(),
		func(_ context.Context, _ store.Tx, status *fleetplanev1.DeviceStatus) error {
			mergeAgentStatus(status, req.Msg.GetStatus())
			return nil
		})
	if err != nil {
		return nil, deviceError(name, err)
	}
	return connect.NewResponse(&fleetplanev1.UpdateDeviceStatusResponse{Device: device}), nil
}

// deviceError turns a missing device into a NOT_FOUND whose message gives the likely cause.
func deviceError(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) && connect.CodeOf(err) != connect.CodeNotFound {
		return connect.NewError(connect.CodeNotFound,
			fmt.Errorf("device %s is not registered; it may have been deleted", name))
	}
	return err
}

func getDevice(ctx context.Context, tx store.Tx, name string) (*fleetplanev1.Device, error) {
	obj, err := tx.Get(ctx, store.KindDevice, name)
	if err != nil {
		return nil, err
	}
	device, ok := obj.(*fleetplanev1.Device)
	if !ok {
		return nil, fmt.Errorf("device %s: store returned a %T", name, obj)
	}
	return device, nil
}
