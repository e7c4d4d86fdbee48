package server

import (
	"context"
	"strconv"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func formatVersion(v int64) string { return strconv.FormatInt(v, 10) }

// templateVersionService serves TemplateVersionService. Template versions are created by the
// fleet validation task, so clients can only read and delete them.
type templateVersionService struct {
	r *resource[*fleetplanev1.TemplateVersion]
}

func (h *templateVersionService) GetTemplateVersion(
	ctx context.Context,
	req *connect.Request[fleetplanev1.GetTemplateVersionRequest],
) (*connect.Response[fleetplanev1.GetTemplateVersionResponse], error) {
	obj, err := h.r.get(ctx, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.GetTemplateVersionResponse{TemplateVersion: obj}), nil
}

func (h *templateVersionService) ListTemplateVersions(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListTemplateVersionsRequest],
) (*connect.Response[fleetplanev1.ListTemplateVersionsResponse], error) {
	page, err := h.r.list(ctx, req.Msg.GetOptions())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.ListTemplateVersionsResponse{TemplateVersions: page.items,
		NextPageToken: page.nextPageToken, ResourceVersion: page.resourceVersion}), nil
}

func (h *templateVersionService) DeleteTemplateVersion(
	ctx context.Context,
	req *connect.Request[fleetplanev1.DeleteTemplateVersionRequest],
) (*connect.Response[fleetplanev1.DeleteTemplateVersionResponse], error) {
	if err := h.r.delete(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteTemplateVersionResponse{}), nil
}

func (h *templateVersionService) WatchTemplateVersions(
	ctx context.Context,
	req *connect.Request[fleetplanev1.WatchTemplateVersionsRequest],
	stream *connect.ServerStream[fleetplanev1.WatchTemplateVersionsResponse],
) error {
	return h.r.watch(ctx, req.Msg.GetOptions(), func() error { return stream.Send(nil) },
		func(typ fleetplanev1.WatchEventType, obj *fleetplanev1.TemplateVersion, version int64) error {
			return stream.Send(&fleetplanev1.WatchTemplateVersionsResponse{
				Type: typ, TemplateVersion: obj, ResourceVersion: formatVersion(version)})
		})
}

// resourceSyncService serves ResourceSyncService.
type resourceSyncService struct {
	r *resource[*fleetplanev1.ResourceSync]
}

func (h *resourceSyncService) GetResourceSync(
	ctx context.Context,
	req *connect.Request[fleetplanev1.GetResourceSyncRequest],
) (*connect.Response[fleetplanev1.GetResourceSyncResponse], error) {
	obj, err := h.r.get(ctx, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.GetResourceSyncResponse{ResourceSync: obj}), nil
}

func (h *resourceSyncService) ListResourceSyncs(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListResourceSyncsRequest],
) (*connect.Response[fleetplanev1.ListResourceSyncsResponse], error) {
	page, err := h.r.list(ctx, req.Msg.GetOptions())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.ListResourceSyncsResponse{ResourceSyncs: page.items,
		NextPageToken: page.nextPageToken, ResourceVersion: page.resourceVersion}), nil
}

func (h *resourceSyncService) CreateResourceSync(
	ctx context.Context,
	req *connect.Request[fleetplanev1.CreateResourceSyncRequest],
) (*connect.Response[fleetplanev1.CreateResourceSyncResponse], error) {
	obj, err := h.r.create(ctx, req.Msg.GetResourceSync())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.CreateResourceSyncResponse{ResourceSync: obj}), nil
}

func (h *resourceSyncService) UpdateResourceSync(
	ctx context.Context,
	req *connect.Request[fleetplanev1.UpdateResourceSyncRequest],
) (*connect.Response[fleetplanev1.UpdateResourceSyncResponse], error) {
	obj, err := h.r.update(ctx, req.Msg.GetResourceSync())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.UpdateResourceSyncResponse{ResourceSync: obj}), nil
}

func (h *resourceSyncService) DeleteResourceSync(
	ctx context.Context,
	req *connect.Request[fleetplanev1.DeleteResourceSyncRequest],
) (*connect.Response[fleetplanev1.DeleteResourceSyncResponse], error) {
	if err := h.r.delete(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteResourceSyncResponse{}), nil
}

func (h *resourceSyncService) WatchResourceSyncs(
	ctx context.Context,
	req *connect.Request[fleetplanev1.WatchResourceSyncsRequest],
	stream *connect.ServerStream[fleetplanev1.WatchResourceSyncsResponse],
) error {
	return h.r.watch(ctx, req.Msg.GetOptions(), func() error { return stream.Send(nil) },
		func(typ fleetplanev1.WatchEventType, obj *fleetplanev1.ResourceSync, version int64) error {
			return stream.Send(&fleetplanev1.WatchResourceSyncsResponse{
				Type: typ, ResourceSync: obj, ResourceVersion: formatVersion(version)})
		})
}

// eventService serves EventService.
type eventService struct {
	r *resource[*fleetplanev1.Event]
}

func (h *eventService) ListEvents(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListEventsRequest],
) (*connect.Response[fleetplanev1.ListEventsResponse], error) {
	page, err := h.r.list(ctx, req.Msg.GetOptions())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.ListEventsResponse{Events: page.items,
		NextPageToken: page.nextPageToken, ResourceVersion: page.resourceVersion}), nil
}

func (h *eventService) WatchEvents(
	ctx context.Context,
	req *connect.Request[fleetplanev1.WatchEventsRequest],
	stream *connect.ServerStream[fleetplanev1.WatchEventsResponse],
) error {
	return h.r.watch(ctx, req.Msg.GetOptions(), func() error { return stream.Send(nil) },
		func(typ fleetplanev1.WatchEventType, obj *fleetplanev1.Event, version int64) error {
			return stream.Send(&fleetplanev1.WatchEventsResponse{
				Type: typ, Event: obj, ResourceVersion: formatVersion(version)})
		})
}
