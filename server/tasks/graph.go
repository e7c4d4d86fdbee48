package tasks

import (
	"context"
	"fmt"
	"maps"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
)

// Task kinds.
const (
	TaskFleetValidate      = "FleetValidate"
	TaskFleetSelectorMatch = "FleetSelectorMatch"
	TaskRepositoryUpdates  = "RepositoryUpdates"
	TaskDeviceRender       = "DeviceRender"
	TaskFleetRollout       = "FleetRollout"
)

// TaskRef names one task: its kind and the key of the object it concerns, "Kind/name".
type TaskRef struct {
	Kind string
	Key  string
}

// Key returns the task key of the named object, for example "Fleet/edge".
func Key(kind, name string) string {
	return kind + "/" + name
}

// parseKey returns the object kind and name of a task key.
func parseKey(key string) (kind, name string, err error) {
	kind, name, ok := strings.Cut(key, "/")
	if !ok || kind == "" || name == "" {
		return "", "", fmt.Errorf("invalid task key %q: want KIND/NAME", key)
	}
	return kind, name, nil
}

// Hook is the store's ChangeHook. It enqueues, in the writing transaction, every task that
// the change triggers (see Triggers).
func Hook(ctx context.Context, tx store.Tx, c store.Change) error {
	for _, ref := range Triggers(c) {
		if err := trigger(ctx, tx, ref.Kind, ref.Key); err != nil {
			return err
		}
	}
	return nil
}

// Triggers returns the tasks that a change triggers, the edges of the task graph. It depends
// only on the change, so a write triggers the same tasks whatever happened before it.
func Triggers(c store.Change) []TaskRef {
	switch c.Kind {
	case store.KindDevice:
		return deviceTriggers(c)
	case store.KindFleet:
		return fleetTriggers(c)
	case store.KindTemplateVersion:
		tv, _ := c.Object.(*fleetplanev1.TemplateVersion)
		fleet := Key(store.KindFleet, tv.GetSpec().GetFleet())
		switch {
		case tv.GetSpec().GetFleet() == "":
			return nil
		case c.Type == store.Added:
			return []TaskRef{{TaskFleetRollout, fleet}}
		case c.Type == store.Deleted:
			// A fleet that still exists gets a template version again, and its devices the
			// name of the version they run.
			return []TaskRef{{TaskFleetValidate, fleet}, {TaskFleetRollout, fleet}}
		}
		return nil
	case store.KindRepository:
		return repositoryTriggers(c)
	}
	return nil
}

func deviceTriggers(c store.Change) []TaskRef {
	key := Key(store.KindDevice, c.Name)
	if c.Type == store.Deleted {
		return []TaskRef{{TaskFleetSelectorMatch, key}, {TaskDeviceRender, key}}
	}
	device, _ := c.Object.(*fleetplanev1.Device)
	old, _ := c.Old.(*fleetplanev1.Device)
	if c.Type == store.Added {
		old = nil
	}

	// A new device has no owner unless the server set one, so only FleetSelectorMatch needs its
	// labels. An owner set at creation still triggers FleetRollout.
	var refs []TaskRef
	labelsChanged := c.Type == store.Modified &&
		!maps.Equal(old.GetMetadata().GetLabels(), device.GetMetadata().GetLabels())
	if c.Type == store.Added || labelsChanged {
		refs = append(refs, TaskRef{TaskFleetSelectorMatch, key})
	}
	ownerChanged := old.GetMetadata().GetOwner() != device.GetMetadata().GetOwner()
	if labelsChanged || ownerChanged {
		refs = append(refs, TaskRef{TaskFleetRollout, key})
	}
	if c.Type == store.Added || !proto.Equal(old.GetSpec(), device.GetSpec()) {
		refs = append(refs, TaskRef{TaskDeviceRender, key})
	}
	return refs
}

func fleetTriggers(c store.Change) []TaskRef {
	key := Key(store.KindFleet, c.Name)
	switch c.Type {
	case store.Added:
		return []TaskRef{{TaskFleetValidate, key}, {TaskFleetSelectorMatch, key}}
	case store.Deleted:
		return []TaskRef{{TaskFleetSelectorMatch, key}}
	}
	fleet, _ := c.Object.(*fleetplanev1.Fleet)
	old, _ := c.Old.(*fleetplanev1.Fleet)

	var refs []TaskRef
	if !proto.Equal(old.GetSpec().GetTemplate(), fleet.GetSpec().GetTemplate()) {
		refs = append(refs, TaskRef{TaskFleetValidate, key})
	}
	if !proto.Equal(old.GetSpec().GetSelector(), fleet.GetSpec().GetSelector()) {
		refs = append(refs, TaskRef{TaskFleetSelectorMatch, key})
	}
	return refs
}

func repositoryTriggers(c store.Change) []TaskRef {
	ref := []TaskRef{{TaskRepositoryUpdates, Key(store.KindRepository, c.Name)}}
	if c.Type != store.Modified {
		return ref
	}
	repo, _ := c.Object.(*fleetplanev1.Repository)
	old, _ := c.Old.(*fleetplanev1.Repository)
	// A status change such as the Accessible condition matters to sources that fetch from the
	// repository. A write that changed neither spec nor status triggers nothing.
	if proto.Equal(old.GetSpec(), repo.GetSpec()) && proto.Equal(old.GetStatus(), repo.GetStatus()) {
		return nil
	}
	return ref
}
