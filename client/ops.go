package client

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

// ListOptions filters and pages a List call. Tasks take no selectors: their State and Kind
// filters are set through FieldSelector as "state=Failed,kind=DeviceRender".
type ListOptions struct {
	LabelSelector string
	FieldSelector string
	PageSize      int32
	PageToken     string
}

// Page is one List response.
type Page struct {
	Items         []proto.Message
	NextPageToken string
	// ResourceVersion is the store's version when the page was read; a Watch from it misses
	// no change. Tasks and replicas have none.
	ResourceVersion string
}

// ops contains the calls for one kind. A nil entry means the API does not offer the call.
type ops struct {
	get       func(context.Context, *Client, string) (proto.Message, error)
	list      func(context.Context, *Client, ListOptions) (*Page, error)
	create    func(context.Context, *Client, proto.Message) (proto.Message, error)
	update    func(context.Context, *Client, proto.Message) (proto.Message, error)
	delete    func(context.Context, *Client, string) error
	deleteAll func(context.Context, *Client) (int64, error)
	watch     func(context.Context, *Client, *fleetplanev1.WatchOptions) (*Watcher, error)
}

func listOptions(o ListOptions) *fleetplanev1.ListOptions {
	return &fleetplanev1.ListOptions{LabelSelector: o.LabelSelector,
		FieldSelector: o.FieldSelector, PageSize: o.PageSize, PageToken: o.PageToken}
}

// items converts a typed slice to messages.
func items[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, v := range in {
		out[i] = v
	}
	return out
}

var deviceOps = ops{
	get: func(ctx context.Context, c *Client, name string) (proto.Message, error) {
		r, err := c.Devices.GetDevice(ctx, connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: name}))
		return response(r, err, (*fleetplanev1.GetDeviceResponse).GetDevice)
	},
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		r, err := c.Devices.ListDevices(ctx, connect.NewRequest(
			&fleetplanev1.ListDevicesRequest{Options: listOptions(o)}))
		if err != nil {
			return nil, err
		}
		return &Page{items(r.Msg.GetDevices()), r.Msg.GetNextPageToken(),
			r.Msg.GetResourceVersion()}, nil
	},
	create: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.Devices.CreateDevice(ctx, connect.NewRequest(
			&fleetplanev1.CreateDeviceRequest{Device: m.(*fleetplanev1.Device)}))
		return response(r, err, (*fleetplanev1.CreateDeviceResponse).GetDevice)
	},
	update: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.Devices.UpdateDevice(ctx, connect.NewRequest(
			&fleetplanev1.UpdateDeviceRequest{Device: m.(*fleetplanev1.Device)}))
		return response(r, err, (*fleetplanev1.UpdateDeviceResponse).GetDevice)
	},
	delete: func(ctx context.Context, c *Client, name string) error {
		_, err := c.Devices.DeleteDevice(ctx, connect.NewRequest(
			&fleetplanev1.DeleteDeviceRequest{Name: name}))
		return err
	},
	deleteAll: func(ctx context.Context, c *Client) (int64, error) {
		r, err := c.Devices.DeleteDevices(ctx, connect.NewRequest(&fleetplanev1.DeleteDevicesRequest{}))
		if err != nil {
			return 0, err
		}
		return r.Msg.GetDeleted(), nil
	},
	watch: func(ctx context.Context, c *Client, o *fleetplanev1.WatchOptions) (*Watcher, error) {
		s, err := c.Devices.WatchDevices(ctx, connect.NewRequest(
			&fleetplanev1.WatchDevicesRequest{Options: o}))
		return newWatcher(s, err, func(r *fleetplanev1.WatchDevicesResponse) WatchEvent {
			return WatchEvent{r.GetType(), r.GetDevice(), r.GetResourceVersion()}
		})
	},
}

var fleetOps = ops{
	get: func(ctx context.Context, c *Client, name string) (proto.Message, error) {
		r, err := c.Fleets.GetFleet(ctx, connect.NewRequest(&fleetplanev1.GetFleetRequest{Name: name}))
		return response(r, err, (*fleetplanev1.GetFleetResponse).GetFleet)
	},
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		r, err := c.Fleets.ListFleets(ctx, connect.NewRequest(
			&fleetplanev1.ListFleetsRequest{Options: listOptions(o)}))
		if err != nil {
			return nil, err
		}
		return &Page{items(r.Msg.GetFleets()), r.Msg.GetNextPageToken(),
			r.Msg.GetResourceVersion()}, nil
	},
	create: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.Fleets.CreateFleet(ctx, connect.NewRequest(
			&fleetplanev1.CreateFleetRequest{Fleet: m.(*fleetplanev1.Fleet)}))
		return response(r, err, (*fleetplanev1.CreateFleetResponse).GetFleet)
	},
	update: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.Fleets.UpdateFleet(ctx, connect.NewRequest(
			&fleetplanev1.UpdateFleetRequest{Fleet: m.(*fleetplanev1.Fleet)}))
		return response(r, err, (*fleetplanev1.UpdateFleetResponse).GetFleet)
	},
	delete: func(ctx context.Context, c *Client, name string) error {
		_, err := c.Fleets.DeleteFleet(ctx, connect.NewRequest(&fleetplanev1.DeleteFleetRequest{Name: name}))
		return err
	},
	deleteAll: func(ctx context.Context, c *Client) (int64, error) {
		r, err := c.Fleets.DeleteFleets(ctx, connect.NewRequest(&fleetplanev1.DeleteFleetsRequest{}))
		if err != nil {
			return 0, err
		}
		return r.Msg.GetDeleted(), nil
	},
	watch: func(ctx context.Context, c *Client, o *fleetplanev1.WatchOptions) (*Watcher, error) {
		s, err := c.Fleets.WatchFleets(ctx, connect.NewRequest(&fleetplanev1.WatchFleetsRequest{Options: o}))
		return newWatcher(s, err, func(r *fleetplanev1.WatchFleetsResponse) WatchEvent {
			return WatchEvent{r.GetType(), r.GetFleet(), r.GetResourceVersion()}
		})
	},
}

// response unwraps a unary response with get, keeping a nil result on error.
func response[Resp any, T proto.Message](r *connect.Response[Resp], err error,
	get func(*Resp) T) (proto.Message, error) {
	if err != nil {
		return nil, err
	}
	return get(r.Msg), nil
}

// unsupported returns the error for a call that the API does not offer for kind.
func unsupported(kind *Kind, verb string) error {
	return fmt.Errorf("%s cannot be %s through the API", kind.Plural, verb)
}
