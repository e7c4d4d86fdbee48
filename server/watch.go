package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/selector"
)

// watchBatch is how many change-log entries a watch reads per transaction.
const watchBatch = 500

// watchSend sends one watch event. obj is the zero T for a bookmark.
type watchSend[T store.Object] func(typ fleetplanev1.WatchEventType, obj T, version int64) error

// watch streams the changes of r's kind after opts.resource_version (after the latest version
// when it is empty) that match the selectors, until ctx ends. It wakes up on every local commit
// through Store.Subscribe, polls every pollInterval for commits of other replicas, and sends a
// bookmark every bookmarkInterval. sendHeaders sends the response headers, so that a client
// knows the watch started before the first change arrives.
func (r *resource[T]) watch(
	ctx context.Context,
	opts *fleetplanev1.WatchOptions,
	sendHeaders func() error,
	send watchSend[T],
) error {
	if err := r.checkSelectors(opts.GetLabelSelector(), opts.GetFieldSelector()); err != nil {
		return err
	}
	labels, _ := selector.ParseLabels(opts.GetLabelSelector())
	prototype, _ := store.New(r.kind)
	fields, _ := selector.ParseFields(opts.GetFieldSelector(), prototype)

	// Subscribe before reading the start version, so that no commit falls in between.
	notify, cancel := r.s.store.Subscribe()
	defer cancel()
	after, err := r.watchStart(ctx, opts.GetResourceVersion())
	if err != nil {
		return err
	}
	if err := sendHeaders(); err != nil {
		return streamError(ctx, err)
	}
	poll := time.NewTicker(r.s.pollInterval)
	defer poll.Stop()
	bookmark := time.NewTicker(r.s.bookmarkInterval)
	defer bookmark.Stop()
	for {
		after, err = r.sendChanges(ctx, after, labels, fields, send)
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			// The client went away or the server is shutting down: a clean end.
			return nil
		case <-notify:
		case <-poll.C:
		case <-bookmark.C:
			var zero T
			if err := send(fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK, zero, after); err != nil {
				return streamError(ctx, err)
			}
		}
	}
}

// watchStart returns the version a watch starts after. It is OUT_OF_RANGE when the change log
// no longer holds the changes right after the requested version.
func (r *resource[T]) watchStart(ctx context.Context, requested string) (int64, error) {
	var latest, oldest int64
	err := r.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		if latest, err = tx.LatestVersion(ctx); err != nil {
			return err
		}
		first, err := tx.Changes(ctx, "", 0, 1)
		if err != nil {
			return err
		}
		if len(first) > 0 {
			oldest = first[0].Version
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if requested == "" {
		return latest, nil
	}
	version, err := strconv.ParseInt(requested, 10, 64)
	if err != nil || version < 0 {
		return 0, invalidArgument("options.resourceVersion",
			fmt.Sprintf("%q is not a resource version; copy resourceVersion from a List response",
				requested))
	}
	if version > latest {
		return 0, invalidArgument("options.resourceVersion",
			fmt.Sprintf("%d is newer than the latest version %d; copy resourceVersion from a List response",
				version, latest))
	}
	// NOTE: a version gap left by a rolled-back insert, just before the oldest kept entry,
	// also looks pruned here. The client then lists again, which is safe.
	if oldest > 1 && version < oldest-1 {
		return 0, connect.NewError(connect.CodeOutOfRange, fmt.Errorf(
			"resource version %d is older than the change log keeps (oldest %d); list again and "+
				"watch from the list's resourceVersion", version, oldest))
	}
	return version, nil
}

// sendChanges sends the matching changes after a version and returns the last version read.
// NOTE: an object whose labels change so that it stops matching the selector gets no event; a
// client that needs to know lists again.
func (r *resource[T]) sendChanges(
	ctx context.Context,
	after int64,
	labels selector.Labels,
	fields selector.Fields,
	send watchSend[T],
) (int64, error) {
	for {
		var changes []store.Change
		err := r.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			var err error
			changes, err = tx.Changes(ctx, r.kind, after, watchBatch)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return after, nil
			}
			return after, err
		}
		for _, c := range changes {
			after = c.Version
			obj, ok := c.Object.(T)
			if !ok || !labels.Matches(store.Meta(obj).GetLabels()) || !fields.Matches(obj) {
				continue
			}
			if err := send(watchEventType(c.Type), r.output(obj), c.Version); err != nil {
				return after, streamError(ctx, err)
			}
		}
		if len(changes) < watchBatch {
			return after, nil
		}
	}
}

// streamError returns nil for a send that failed because the client went away.
func streamError(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("send watch event: %w", err)
}

func watchEventType(t store.ChangeType) fleetplanev1.WatchEventType {
	switch t {
	case store.Added:
		return fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_ADDED
	case store.Modified:
		return fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_MODIFIED
	case store.Deleted:
		return fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_DELETED
	}
	return fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_UNSPECIFIED
}
