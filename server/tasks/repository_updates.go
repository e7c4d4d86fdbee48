package tasks

import (
	"context"
	"fmt"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
)

// repositoryUpdates runs RepositoryUpdates for key Repository/NAME: it triggers FleetValidate
// for every fleet and DeviceRender for every device whose config references the repository,
// because a created, changed or deleted repository changes whether their sources resolve.
//
// NOTE: nothing indexes config references, so each run reads every fleet and every device.
func (r *runner) repositoryUpdates(ctx context.Context, key string) error {
	name, err := nameOf(key, store.KindRepository)
	if err != nil {
		return permanent(err)
	}
	if err := r.triggerReferences(ctx, store.KindFleet, TaskFleetValidate, name); err != nil {
		return err
	}
	return r.triggerReferences(ctx, store.KindDevice, TaskDeviceRender, name)
}

// triggerReferences pages through the objects of kind (fleets or devices), one transaction
// per page, and triggers task for each that references the repository.
func (r *runner) triggerReferences(ctx context.Context, kind, task, repository string) error {
	var opts store.ListOptions
	for {
		var next string
		err := r.deps.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			page, err := tx.List(ctx, kind, opts)
			if err != nil {
				return fmt.Errorf("list %s: %w", kind, err)
			}
			for _, obj := range page.Items {
				if !referencesRepository(configOf(obj), repository) {
					continue
				}
				if err := trigger(ctx, tx, task, Key(kind, store.Meta(obj).GetName())); err != nil {
					return err
				}
			}
			next = page.NextPageToken
			return nil
		})
		if err != nil || next == "" {
			return err
		}
		opts.PageToken = next
	}
}

// configOf returns the config providers of a device's spec or a fleet's template.
func configOf(obj store.Object) []*fleetplanev1.ConfigProviderSpec {
	switch obj := obj.(type) {
	case *fleetplanev1.Device:
		return obj.GetSpec().GetConfig()
	case *fleetplanev1.Fleet:
		return obj.GetSpec().GetTemplate().GetSpec().GetConfig()
	}
	return nil
}

func referencesRepository(config []*fleetplanev1.ConfigProviderSpec, repository string) bool {
	for _, provider := range config {
		if provider.GetGitRef().GetRepository() == repository ||
			provider.GetHttpRef().GetRepository() == repository {
			return true
		}
	}
	return false
}
