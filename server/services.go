package server

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/internal/validation"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
)

// fleetOwnerPrefix starts the owner of a device that a fleet manages.
const fleetOwnerPrefix = store.KindFleet + "/"

func newDevices(s *Server) *resource[*fleetplanev1.Device] {
	return &resource[*fleetplanev1.Device]{
		s: s, kind: store.KindDevice, field: "device",
		validate: func(_ context.Context, d *fleetplanev1.Device) error {
			return validation.Device("device", d).Err()
		},
		beforeUpdate: checkDeviceOwner,
	}
}

// checkDeviceOwner rejects a spec change of a device that a fleet owns. Label changes are
// allowed, because they decide which fleet selects the device.
func checkDeviceOwner(stored, d *fleetplanev1.Device) error {
	owner := stored.GetMetadata().GetOwner()
	if !strings.HasPrefix(owner, fleetOwnerPrefix) {
		return nil
	}
	before, after := stored.GetSpec(), d.GetSpec()
	if before == nil {
		before = &fleetplanev1.DeviceSpec{}
	}
	if after == nil {
		after = &fleetplanev1.DeviceSpec{}
	}
	if proto.Equal(before, after) {
		return nil
	}
	return failedPrecondition(fmt.Sprintf("device %s is owned by %s, which sets its spec; "+
		"change the fleet's template or remove the device from the fleet",
		stored.GetMetadata().GetName(), owner))
}

func newFleets(s *Server) *resource[*fleetplanev1.Fleet] {
	return &resource[*fleetplanev1.Fleet]{
		s: s, kind: store.KindFleet, field: "fleet",
		ownedKinds: []string{store.KindTemplateVersion},
		validate: func(_ context.Context, f *fleetplanev1.Fleet) error {
			errs := validation.Fleet("fleet", f)
			for _, err := range s.hooks.ValidateTemplate(f.GetSpec().GetTemplate()) {
				errs = append(errs, &validation.FieldError{
					Field: "fleet.spec.template", Message: err.Error()})
			}
			return errs.Err()
		},
	}
}

func newTemplateVersions(s *Server) *resource[*fleetplanev1.TemplateVersion] {
	return &resource[*fleetplanev1.TemplateVersion]{
		s: s, kind: store.KindTemplateVersion, field: "templateVersion"}
}

func newResourceSyncs(s *Server) *resource[*fleetplanev1.ResourceSync] {
	return &resource[*fleetplanev1.ResourceSync]{
		s: s, kind: store.KindResourceSync, field: "resourceSync",
		validate: func(_ context.Context, r *fleetplanev1.ResourceSync) error {
			return validation.ResourceSync("resourceSync", r).Err()
		},
	}
}

func newEvents(s *Server) *resource[*fleetplanev1.Event] {
	return &resource[*fleetplanev1.Event]{s: s, kind: store.KindEvent, field: "event"}
}

// deviceService serves DeviceService.
type deviceService struct {
	s *Server
	r *resource[*fleetplanev1.Device]
}

func (h *deviceService) GetDevice(
	ctx context.Context,
	req *connect.Request[fleetplanev1.GetDeviceRequest],
) (*connect.Response[fleetplanev1.GetDeviceResponse], error) {
	obj, err := h.r.get(ctx, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.GetDeviceResponse{Device: obj}), nil
}

func (h *deviceService) ListDevices(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListDevicesRequest],
) (*connect.Response[fleetplanev1.ListDevicesResponse], error) {
	page, err := h.r.list(ctx, req.Msg.GetOptions())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.ListDevicesResponse{Devices: page.items,
		NextPageToken: page.nextPageToken, ResourceVersion: page.resourceVersion}), nil
}

func (h *deviceService) CreateDevice(
	ctx context.Context,
	req *connect.Request[fleetplanev1.CreateDeviceRequest],
) (*connect.Response[fleetplanev1.CreateDeviceResponse], error) {
	obj, err := h.r.create(ctx, req.Msg.GetDevice())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.CreateDeviceResponse{Device: obj}), nil
}

func (h *deviceService) UpdateDevice(
	ctx context.Context,
	req *connect.Request[fleetplanev1.UpdateDeviceRequest],
) (*connect.Response[fleetplanev1.UpdateDeviceResponse], error) {
	obj, err := h.r.update(ctx, req.Msg.GetDevice())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.UpdateDeviceResponse{Device: obj}), nil
}

func (h *deviceService) DeleteDevice(
	ctx context.Context,
	req *connect.Request[fleetplanev1.DeleteDeviceRequest],
) (*connect.Response[fleetplanev1.DeleteDeviceResponse], error) {
	if err := h.r.delete(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteDeviceResponse{}), nil
}

func (h *deviceService) DeleteDevices(
	ctx context.Context,
	_ *connect.Request[fleetplanev1.DeleteDevicesRequest],
) (*connect.Response[fleetplanev1.DeleteDevicesResponse], error) {
	n, err := h.r.deleteAll(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteDevicesResponse{Deleted: n}), nil
}

func (h *deviceService) WatchDevices(
	ctx context.Context,
	req *connect.Request[fleetplanev1.WatchDevicesRequest],
	stream *connect.ServerStream[fleetplanev1.WatchDevicesResponse],
) error {
	return h.r.watch(ctx, req.Msg.GetOptions(), func() error { return stream.Send(nil) },
		func(typ fleetplanev1.WatchEventType, obj *fleetplanev1.Device, version int64) error {
			return stream.Send(&fleetplanev1.WatchDevicesResponse{
				Type: typ, Device: obj, ResourceVersion: formatVersion(version)})
		})
}

func (h *deviceService) GetRenderedDevice(
	ctx context.Context,
	req *connect.Request[fleetplanev1.GetRenderedDeviceRequest],
) (*connect.Response[fleetplanev1.GetRenderedDeviceResponse], error) {
	name := req.Msg.GetName()
	if err := validation.Name("name", name).Err(); err != nil {
		return nil, err
	}
	var rendered *fleetplanev1.RenderedDeviceSpec
	err := h.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Get(ctx, store.KindDevice, name); err != nil {
			return err
		}
		var err error
		rendered, err = tx.GetRendered(ctx, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.GetRenderedDeviceResponse{Rendered: rendered}), nil
}

func (h *deviceService) UpdateDeviceStatus(
	ctx context.Context,
	req *connect.Request[fleetplanev1.UpdateDeviceStatusRequest],
) (*connect.Response[fleetplanev1.UpdateDeviceStatusResponse], error) {
	name := req.Msg.GetName()
	if err := validation.Name("name", name).Err(); err != nil {
		return nil, err
	}
	var out *fleetplanev1.Device
	err := h.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		got, err := tx.Get(ctx, store.KindDevice, name)
		if err != nil {
			return err
		}
		d := got.(*fleetplanev1.Device)
		d.Status = cloneOf(req.Msg.GetStatus())
		if rv := req.Msg.GetResourceVersion(); rv != "" {
			d.Metadata.ResourceVersion = rv
		}
		updated, err := tx.UpdateStatus(ctx, d)
		if err != nil {
			return err
		}
		out = updated.(*fleetplanev1.Device)
		return h.r.record(ctx, tx, name, "StatusUpdated", "status updated")
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.UpdateDeviceStatusResponse{Device: out}), nil
}

// fleetService serves FleetService.
type fleetService struct {
	r *resource[*fleetplanev1.Fleet]
}

func (h *fleetService) GetFleet(
	ctx context.Context,
	req *connect.Request[fleetplanev1.GetFleetRequest],
) (*connect.Response[fleetplanev1.GetFleetResponse], error) {
	obj, err := h.r.get(ctx, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.GetFleetResponse{Fleet: obj}), nil
}

func (h *fleetService) ListFleets(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListFleetsRequest],
) (*connect.Response[fleetplanev1.ListFleetsResponse], error) {
	page, err := h.r.list(ctx, req.Msg.GetOptions())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.ListFleetsResponse{Fleets: page.items,
		NextPageToken: page.nextPageToken, ResourceVersion: page.resourceVersion}), nil
}

func (h *fleetService) CreateFleet(
	ctx context.Context,
	req *connect.Request[fleetplanev1.CreateFleetRequest],
) (*connect.Response[fleetplanev1.CreateFleetResponse], error) {
	obj, err := h.r.create(ctx, req.Msg.GetFleet())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.CreateFleetResponse{Fleet: obj}), nil
}

func (h *fleetService) UpdateFleet(
	ctx context.Context,
	req *connect.Request[fleetplanev1.UpdateFleetRequest],
) (*connect.Response[fleetplanev1.UpdateFleetResponse], error) {
	obj, err := h.r.update(ctx, req.Msg.GetFleet())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.UpdateFleetResponse{Fleet: obj}), nil
}

func (h *fleetService) DeleteFleet(
	ctx context.Context,
	req *connect.Request[fleetplanev1.DeleteFleetRequest],
) (*connect.Response[fleetplanev1.DeleteFleetResponse], error) {
	if err := h.r.delete(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteFleetResponse{}), nil
}

func (h *fleetService) DeleteFleets(
	ctx context.Context,
	_ *connect.Request[fleetplanev1.DeleteFleetsRequest],
) (*connect.Response[fleetplanev1.DeleteFleetsResponse], error) {
	n, err := h.r.deleteAll(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteFleetsResponse{Deleted: n}), nil
}

func (h *fleetService) WatchFleets(
	ctx context.Context,
	req *connect.Request[fleetplanev1.WatchFleetsRequest],
	stream *connect.ServerStream[fleetplanev1.WatchFleetsResponse],
) error {
	return h.r.watch(ctx, req.Msg.GetOptions(), func() error { return stream.Send(nil) },
		func(typ fleetplanev1.WatchEventType, obj *fleetplanev1.Fleet, version int64) error {
			return stream.Send(&fleetplanev1.WatchFleetsResponse{
				Type: typ, Fleet: obj, ResourceVersion: formatVersion(version)})
		})
}
