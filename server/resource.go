package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/events"
	"github.com/fleetplane/fleetplane/server/internal/validation"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/selector"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TODO: take the actor from the authenticated user once the API has user authentication.
const anonymousActor = "user:anonymous"

// eventComponent is the event source of changes made through the API.
const eventComponent = "api"

// resource implements the Get, List, Create, Update, Delete and Watch calls of one kind. The
// per-service types translate requests and responses and add kind-specific rules.
type resource[T store.Object] struct {
	s    *Server
	kind string
	// field is the JSON name of the object field in create and update requests, such as
	// "device"; validation errors start with it.
	field string
	// validate checks an object sent for create or update; nil for read-only kinds.
	validate func(ctx context.Context, obj T) error
	// redact clears write-only fields before an object leaves the server; nil when the kind
	// has none.
	redact func(obj T)
	// beforeUpdate applies kind-specific rules to an update, given the stored object read in
	// the same transaction; nil when there are none.
	beforeUpdate func(stored, obj T) error
	// ownedKinds are the kinds whose objects this kind owns (metadata.owner "Kind/name"). They
	// are deleted in the transaction that deletes their owner, so a new object of the same name
	// never inherits them.
	ownedKinds []string
}

func (r *resource[T]) get(ctx context.Context, name string) (T, error) {
	var zero T
	if err := validation.Name("name", name).Err(); err != nil {
		return zero, err
	}
	var out T
	err := r.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, r.kind, name)
		if err != nil {
			return err
		}
		out = obj.(T)
		return nil
	})
	if err != nil {
		return zero, err
	}
	return r.output(out), nil
}

// listPage is one page of a List call.
type listPage[T store.Object] struct {
	items           []T
	nextPageToken   string
	resourceVersion string
}

func (r *resource[T]) list(
	ctx context.Context,
	opts *fleetplanev1.ListOptions,
) (*listPage[T], error) {
	if err := r.checkSelectors(opts.GetLabelSelector(), opts.GetFieldSelector()); err != nil {
		return nil, err
	}
	if opts.GetPageSize() < 0 {
		return nil, invalidArgument("options.pageSize",
			fmt.Sprintf("%d is negative; use 0 for the default of %d", opts.GetPageSize(),
				store.DefaultPageSize))
	}
	var res *store.ListResult
	err := r.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		res, err = tx.List(ctx, r.kind, store.ListOptions{
			LabelSelector: opts.GetLabelSelector(),
			FieldSelector: opts.GetFieldSelector(),
			Limit:         int(opts.GetPageSize()),
			PageToken:     opts.GetPageToken(),
		})
		return err
	})
	if errors.Is(err, store.ErrInvalidArgument) && opts.GetPageToken() != "" {
		// The selectors were checked above, so the page token is what the store rejected.
		return nil, invalidArgument("options.pageToken", "malformed page token; copy "+
			"nextPageToken from the previous response or list again without a token")
	}
	if err != nil {
		return nil, err
	}
	page := &listPage[T]{
		items:           make([]T, 0, len(res.Items)),
		nextPageToken:   res.NextPageToken,
		resourceVersion: strconv.FormatInt(res.Version, 10),
	}
	for _, obj := range res.Items {
		page.items = append(page.items, r.output(obj.(T)))
	}
	return page, nil
}

// checkSelectors parses the selectors so that a bad one is reported with its field name.
func (r *resource[T]) checkSelectors(labelSelector, fieldSelector string) error {
	if _, err := selector.ParseLabels(labelSelector); err != nil {
		return invalidArgument("options.labelSelector", err.Error())
	}
	prototype, err := store.New(r.kind)
	if err != nil {
		return err
	}
	if _, err := selector.ParseFields(fieldSelector, prototype); err != nil {
		return invalidArgument("options.fieldSelector", err.Error())
	}
	return nil
}

func (r *resource[T]) create(ctx context.Context, obj T) (T, error) {
	var zero T
	if !obj.ProtoReflect().IsValid() {
		return zero, invalidArgument(r.field, "must be set")
	}
	if err := r.checkTypeFields(obj); err != nil {
		return zero, err
	}
	r.clearServerFields(obj)
	if err := r.validate(ctx, obj); err != nil {
		return zero, err
	}
	var out T
	err := r.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		created, err := tx.Create(ctx, cloneOf(obj))
		if err != nil {
			return err
		}
		out = created.(T)
		return r.record(ctx, tx, store.Meta(out).GetName(), "Created", "created")
	})
	if err != nil {
		return zero, err
	}
	return r.output(out), nil
}

// clearServerFields drops what only the server may set from an object sent for create.
func (r *resource[T]) clearServerFields(obj T) {
	setKind(obj)
	setEmptySpec(obj)
	m := store.Meta(obj)
	m.Owner = ""
	m.Generation = 0
	m.ResourceVersion = ""
	m.CreationTimestamp = nil
	m.DeletionTimestamp = nil
	dropServerAnnotations(m)
	store.SetStatus(obj, nil)
}

func dropServerAnnotations(m *fleetplanev1.ObjectMeta) {
	for k := range m.GetAnnotations() {
		if strings.HasPrefix(k, validation.ServerPrefix) {
			delete(m.Annotations, k)
		}
	}
}

// setEmptySpec sets an empty spec when the request has none, so that every stored object of a
// kind with a spec has one.
// NOTE: the SQLite store rejects an Update without a spec (NOT NULL constraint on
// resources.spec), which would otherwise surface as INTERNAL.
func setEmptySpec(obj store.Object) {
	m := obj.ProtoReflect()
	if fd := m.Descriptor().Fields().ByName("spec"); fd != nil {
		m.Mutable(fd)
	}
}

// checkTypeFields rejects an apiVersion or kind that does not match the service, so that an
// object sent to the wrong service is not stored as another kind. Empty values are allowed.
func (r *resource[T]) checkTypeFields(obj T) error {
	var errs validation.List
	m := obj.ProtoReflect()
	fields := m.Descriptor().Fields()
	if fd := fields.ByName("api_version"); fd != nil {
		if v := m.Get(fd).String(); v != "" && v != store.APIVersion {
			errs = append(errs, invalidArgument(r.field+".apiVersion", fmt.Sprintf(
				"%q is not supported; use %q or leave it empty", v, store.APIVersion)))
		}
	}
	if fd := fields.ByName("kind"); fd != nil {
		if v, want := m.Get(fd).String(), store.KindOf(obj); v != "" && v != want {
			errs = append(errs, invalidArgument(r.field+".kind", fmt.Sprintf(
				"%q does not match this service; use %q or leave it empty, or send the "+
					"object to the %s service", v, want, v)))
		}
	}
	return errs.Err()
}

// setKind fills in the apiVersion and kind fields.
func setKind(obj store.Object) {
	m := obj.ProtoReflect()
	fields := m.Descriptor().Fields()
	if fd := fields.ByName("api_version"); fd != nil {
		m.Set(fd, protoreflect.ValueOfString(store.APIVersion))
	}
	if fd := fields.ByName("kind"); fd != nil {
		m.Set(fd, protoreflect.ValueOfString(store.KindOf(obj)))
	}
}

func (r *resource[T]) update(ctx context.Context, obj T) (T, error) {
	var zero T
	if !obj.ProtoReflect().IsValid() {
		return zero, invalidArgument(r.field, "must be set")
	}
	if err := r.checkTypeFields(obj); err != nil {
		return zero, err
	}
	setKind(obj)
	setEmptySpec(obj)
	if err := r.validate(ctx, obj); err != nil {
		return zero, err
	}
	var out T
	err := r.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		// The transaction may run more than once, so it works on a copy of the request.
		obj := cloneOf(obj)
		got, err := tx.Get(ctx, r.kind, store.Meta(obj).GetName())
		if err != nil {
			return err
		}
		stored := got.(T)
		keepServerFields(store.Meta(stored), store.Meta(obj))
		// A stale resource version fails in tx.Update with a conflict. That error is clearer
		// than a kind rule that compares the request with a newer object.
		current := store.Meta(obj).GetResourceVersion() == store.Meta(stored).GetResourceVersion()
		if r.beforeUpdate != nil && current {
			if err := r.beforeUpdate(stored, obj); err != nil {
				return err
			}
		}
		updated, err := tx.Update(ctx, obj)
		if err != nil {
			return err
		}
		out = updated.(T)
		return r.record(ctx, tx, store.Meta(out).GetName(), "Updated", "updated")
	})
	if err != nil {
		return zero, err
	}
	return r.output(out), nil
}

// keepServerFields copies the owner and the server's annotations from the stored metadata, and
// its resource version when the request has none, so that the update still compares and swaps.
func keepServerFields(stored, m *fleetplanev1.ObjectMeta) {
	m.Owner = stored.GetOwner()
	dropServerAnnotations(m)
	for k, v := range stored.GetAnnotations() {
		if strings.HasPrefix(k, validation.ServerPrefix) {
			if m.Annotations == nil {
				m.Annotations = map[string]string{}
			}
			m.Annotations[k] = v
		}
	}
	if m.GetResourceVersion() == "" {
		m.ResourceVersion = stored.GetResourceVersion()
	}
}

func (r *resource[T]) delete(ctx context.Context, name string) error {
	if err := validation.Name("name", name).Err(); err != nil {
		return err
	}
	return r.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Delete(ctx, r.kind, name); err != nil {
			return err
		}
		if err := r.deleteOwned(ctx, tx, name); err != nil {
			return err
		}
		return r.record(ctx, tx, name, "Deleted", "deleted")
	})
}

// deleteOwned deletes the objects of r.ownedKinds that the named object owns.
func (r *resource[T]) deleteOwned(ctx context.Context, tx store.Tx, name string) error {
	owner := r.kind + "/" + name
	for _, kind := range r.ownedKinds {
		// Deleting changes the page boundaries, so read every name before deleting any.
		var owned []string
		opts := store.ListOptions{FieldSelector: "metadata.owner=" + owner}
		for {
			page, err := tx.List(ctx, kind, opts)
			if err != nil {
				return fmt.Errorf("list %s objects owned by %s: %w", kind, owner, err)
			}
			for _, obj := range page.Items {
				owned = append(owned, store.Meta(obj).GetName())
			}
			if page.NextPageToken == "" {
				break
			}
			opts.PageToken = page.NextPageToken
		}
		for _, n := range owned {
			if _, err := tx.Delete(ctx, kind, n); err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("delete %s %s owned by %s: %w", kind, n, owner, err)
			}
		}
	}
	return nil
}

func (r *resource[T]) deleteAll(ctx context.Context) (int64, error) {
	var n int64
	err := r.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		n, err = tx.DeleteAll(ctx, r.kind)
		if err != nil {
			return err
		}
		for _, kind := range r.ownedKinds {
			// NOTE: this assumes every object of an owned kind has an owner of this kind.
			if _, err := tx.DeleteAll(ctx, kind); err != nil {
				return fmt.Errorf("delete the %s objects owned by the deleted %s objects: %w",
					kind, r.kind, err)
			}
		}
		return events.Record(ctx, tx, events.Entry{
			Kind:      r.kind,
			Reason:    r.kind + "sDeleted",
			Type:      events.Normal,
			Message:   fmt.Sprintf("all %d objects of kind %s deleted", n, r.kind),
			Actor:     anonymousActor,
			Component: eventComponent,
		})
	})
	return n, err
}

// record adds an event about the named object. The message holds only the kind, name and
// action, never object content, so it cannot leak a secret.
func (r *resource[T]) record(ctx context.Context, tx store.Tx, name, reason, action string) error {
	return r.recordFor(ctx, tx, r.kind, name, reason, action)
}

// recordFor adds an event about an object of any kind.
func (r *resource[T]) recordFor(
	ctx context.Context,
	tx store.Tx,
	kind,
	name,
	reason,
	action string,
) error {
	return events.Record(ctx, tx, events.Entry{
		Kind:      kind,
		Name:      name,
		Reason:    kind + reason,
		Type:      events.Normal,
		Message:   fmt.Sprintf("%s %s %s", kind, name, action),
		Actor:     anonymousActor,
		Component: eventComponent,
	})
}

// output prepares an object for a response: write-only fields cleared.
func (r *resource[T]) output(obj T) T {
	if r.redact != nil {
		r.redact(obj)
	}
	return obj
}

func cloneOf[T proto.Message](m T) T {
	return proto.Clone(m).(T)
}
