package client

import (
	"context"
	"fmt"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

// Get returns the object of kind named name.
func (c *Client) Get(ctx context.Context, kind *Kind, name string) (proto.Message, error) {
	if kind.ops.get == nil {
		return nil, fmt.Errorf("%s cannot be read one by one; list them instead", kind.Plural)
	}
	return kind.ops.get(ctx, c, name)
}

// List returns one page of objects of kind.
func (c *Client) List(ctx context.Context, kind *Kind, opts ListOptions) (*Page, error) {
	if kind.ops.list == nil {
		return nil, unsupported(kind, "listed")
	}
	return kind.ops.list(ctx, c, opts)
}

// ListAll follows page tokens from opts.PageToken to the last page and returns every object,
// with the resource version of the first page. A positive limit stops after that many objects.
func (c *Client) ListAll(ctx context.Context, kind *Kind, opts ListOptions, limit int) (*Page, error) {
	all := &Page{}
	for first := true; ; first = false {
		page, err := c.List(ctx, kind, opts)
		if err != nil {
			return nil, err
		}
		if first {
			all.ResourceVersion = page.ResourceVersion
		}
		all.Items = append(all.Items, page.Items...)
		if limit > 0 && len(all.Items) >= limit {
			all.Items = all.Items[:limit]
			all.NextPageToken = page.NextPageToken
			return all, nil
		}
		if page.NextPageToken == "" || page.NextPageToken == opts.PageToken {
			return all, nil
		}
		opts.PageToken = page.NextPageToken
	}
}

// Create creates obj, whose kind is taken from its message type.
func (c *Client) Create(ctx context.Context, obj proto.Message) (proto.Message, error) {
	kind, err := kindFor(obj)
	if err != nil {
		return nil, err
	}
	if kind.ops.create == nil {
		return nil, unsupported(kind, "created")
	}
	return kind.ops.create(ctx, c, obj)
}

// Update replaces the labels, annotations and spec of obj. It fails with ABORTED when obj
// carries a resource version that is no longer current.
func (c *Client) Update(ctx context.Context, obj proto.Message) (proto.Message, error) {
	kind, err := kindFor(obj)
	if err != nil {
		return nil, err
	}
	if kind.ops.update == nil {
		return nil, unsupported(kind, "updated")
	}
	return kind.ops.update(ctx, c, obj)
}

// Delete deletes the object of kind named name.
func (c *Client) Delete(ctx context.Context, kind *Kind, name string) error {
	if kind.ops.delete == nil {
		return unsupported(kind, "deleted")
	}
	return kind.ops.delete(ctx, c, name)
}

// DeleteAll deletes every object of kind and returns how many it deleted.
func (c *Client) DeleteAll(ctx context.Context, kind *Kind) (int64, error) {
	if kind.ops.deleteAll == nil {
		return 0, fmt.Errorf("%s cannot be deleted all at once; delete them by name",
			kind.Plural)
	}
	return kind.ops.deleteAll(ctx, c)
}

// Watch streams changes of kind. Stop it by canceling ctx or calling Close.
func (c *Client) Watch(ctx context.Context, kind *Kind, opts *fleetplanev1.WatchOptions) (*Watcher, error) {
	if kind.ops.watch == nil {
		return nil, unsupported(kind, "watched")
	}
	return kind.ops.watch(ctx, c, opts)
}

// GetRenderedDevice returns the spec rendered for the device named name.
func (c *Client) GetRenderedDevice(ctx context.Context, name string) (*fleetplanev1.RenderedDeviceSpec, error) {
	r, err := c.Devices.GetRenderedDevice(ctx, newRequest(&fleetplanev1.GetRenderedDeviceRequest{Name: name}))
	if err != nil {
		return nil, err
	}
	return r.Msg.GetRendered(), nil
}

func kindFor(obj proto.Message) (*Kind, error) {
	kind := KindOf(obj)
	if kind == nil {
		return nil, fmt.Errorf("%s is not a Fleetplane resource",
			obj.ProtoReflect().Descriptor().FullName())
	}
	return kind, nil
}
