package tasks

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/fleetplane/fleetplane/dispatcher"
	"github.com/fleetplane/fleetplane/store"
)

// Deps are the services that the tasks use.
type Deps struct {
	Store  store.Store
	Logger *slog.Logger
	// Notify, if set, is called after a render commits a new rendered version of the device,
	// so that the agent stream can push it.
	Notify func(device string)
}

// runner runs the tasks with their dependencies.
type runner struct {
	deps Deps
	log  *slog.Logger
}

func newRunner(deps Deps) *runner {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &runner{deps: deps, log: log}
}

// Register registers every task's handler with d.
func Register(d *dispatcher.Dispatcher, deps Deps) {
	for kind, h := range newRunner(deps).handlers() {
		d.Register(kind, dispatcher.Handler(h))
	}
}

// trigger enqueues a task in tx. Tests replace it to count triggers without a dispatcher.
var trigger = dispatcher.Trigger

// permanent marks an error that retrying cannot fix, such as a malformed task key.
var permanent = dispatcher.Permanent

// nameOf returns the object name of a task key, which must name an object of kind.
func nameOf(key, kind string) (string, error) {
	gotKind, name, err := parseKey(key)
	if err != nil {
		return "", err
	}
	if gotKind != kind {
		return "", fmt.Errorf("invalid task key %q: want %s/NAME", key, kind)
	}
	return name, nil
}

// handlers returns each task kind's handler.
func (r *runner) handlers() map[string]func(ctx context.Context, key string) error {
	return map[string]func(ctx context.Context, key string) error{
		TaskFleetValidate:      r.fleetValidate,
		TaskFleetSelectorMatch: r.fleetSelectorMatch,
		TaskRepositoryUpdates:  r.repositoryUpdates,
		TaskDeviceRender:       r.deviceRender,
		TaskFleetRollout:       r.fleetRollout,
	}
}
