package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/selector"
)

const reasonMultipleFleetsMatch = "MultipleFleetsMatch"

// deviceBatch is how many devices a task handles in one transaction when it works on a whole
// fleet, so that no transaction holds the store for long.
const deviceBatch = 200

// fleetSelectorMatch runs FleetSelectorMatch. Key Device/NAME re-decides the owner of one
// device. Key Fleet/NAME re-decides every device that the fleet selects, owns, or competes for
// (a device whose MultipleOwners condition names it), which covers the devices its old selector
// matched.
func (r *runner) fleetSelectorMatch(ctx context.Context, key string) error {
	kind, name, err := parseKey(key)
	if err != nil {
		return permanent(err)
	}
	switch kind {
	case store.KindDevice:
		return r.deps.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			return r.matchDevices(ctx, tx, []string{name})
		})
	case store.KindFleet:
		var devices []string
		err := r.deps.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			devices, err = fleetCandidates(ctx, tx, name)
			return err
		})
		if err != nil {
			return err
		}
		return r.inBatches(ctx, devices, r.matchDevices)
	}
	return permanent(fmt.Errorf("invalid task key %q: want Device/NAME or Fleet/NAME", key))
}

// inBatches runs fn on devices, deviceBatch names per transaction.
func (r *runner) inBatches(
	ctx context.Context, devices []string, fn func(ctx context.Context, tx store.Tx, devices []string) error,
) error {
	for start := 0; start < len(devices); start += deviceBatch {
		batch := devices[start:min(start+deviceBatch, len(devices))]
		err := r.deps.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			return fn(ctx, tx, batch)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// fleetCandidates returns the sorted names of the devices whose owner may change because the
// fleet's selector changed or the fleet was deleted.
func fleetCandidates(ctx context.Context, tx store.Tx, fleet string) ([]string, error) {
	names := make(map[string]bool)
	collect := func(opts store.ListOptions, keep func(*fleetplanev1.Device) bool) error {
		return listDevices(ctx, tx, opts, func(d *fleetplanev1.Device) error {
			if keep == nil || keep(d) {
				names[d.GetMetadata().GetName()] = true
			}
			return nil
		})
	}

	obj, err := tx.Get(ctx, store.KindFleet, fleet)
	switch {
	case err == nil:
		sel, ok := fleetSelector(obj.(*fleetplanev1.Fleet))
		if ok {
			if err := collect(store.ListOptions{LabelSelector: sel.String()}, nil); err != nil {
				return nil, err
			}
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}

	owner := Key(store.KindFleet, fleet)
	if err := collect(store.ListOptions{FieldSelector: "metadata.owner=" + owner}, nil); err != nil {
		return nil, err
	}
	// NOTE: devices with several matching fleets have no owner and no selectable field that
	// names the fleets, so this scans every device without an owner.
	contested := func(d *fleetplanev1.Device) bool {
		return slices.Contains(contestingFleets(d), fleet)
	}
	if err := collect(store.ListOptions{FieldSelector: "metadata.owner="}, contested); err != nil {
		return nil, err
	}

	out := make([]string, 0, len(names))
	for name := range names {
		out = append(out, name)
	}
	sort.Strings(out)
	return out, nil
}

// listDevices calls fn for every device that opts selects, page by page.
func listDevices(ctx context.Context, tx store.Tx, opts store.ListOptions, fn func(*fleetplanev1.Device) error) error {
	for {
		page, err := tx.List(ctx, store.KindDevice, opts)
		if err != nil {
			return fmt.Errorf("list devices: %w", err)
		}
		for _, obj := range page.Items {
			if err := fn(obj.(*fleetplanev1.Device)); err != nil {
				return err
			}
		}
		if page.NextPageToken == "" {
			return nil
		}
		opts.PageToken = page.NextPageToken
	}
}

// ownerSelector is one fleet's parsed selector.
type ownerSelector struct {
	fleet    string
	selector selector.Labels
}

// fleetSelector returns the fleet's selector, and false when it selects nothing: a missing or
// empty selector, or one that cannot be parsed.
func fleetSelector(fleet *fleetplanev1.Fleet) (selector.Labels, bool) {
	ls := fleet.GetSpec().GetSelector()
	if len(ls.GetMatchLabels()) == 0 && len(ls.GetMatchExpressions()) == 0 {
		return selector.Labels{}, false
	}
	sel, err := selector.FromLabelSelector(ls)
	if err != nil || sel.Empty() {
		return selector.Labels{}, false
	}
	return sel, true
}

// loadSelectors returns the selector of every fleet that selects something, sorted by fleet.
func (r *runner) loadSelectors(ctx context.Context, tx store.Tx) ([]ownerSelector, error) {
	var out []ownerSelector
	var opts store.ListOptions
	for {
		page, err := tx.List(ctx, store.KindFleet, opts)
		if err != nil {
			return nil, fmt.Errorf("list fleets: %w", err)
		}
		for _, obj := range page.Items {
			fleet := obj.(*fleetplanev1.Fleet)
			sel, ok := fleetSelector(fleet)
			if !ok {
				if _, err := selector.FromLabelSelector(fleet.GetSpec().GetSelector()); err != nil {
					r.log.WarnContext(ctx, "fleet selector is invalid, so the fleet owns no device",
						slog.String("fleet", fleet.GetMetadata().GetName()), slog.Any("err", err))
				}
				continue
			}
			out = append(out, ownerSelector{fleet: fleet.GetMetadata().GetName(), selector: sel})
		}
		if page.NextPageToken == "" {
			return out, nil
		}
		opts.PageToken = page.NextPageToken
	}
}

// matchDevices re-decides the owner of each named device from the current fleets.
func (r *runner) matchDevices(ctx context.Context, tx store.Tx, devices []string) error {
	selectors, err := r.loadSelectors(ctx, tx)
	if err != nil {
		return err
	}
	for _, name := range devices {
		obj, err := tx.Get(ctx, store.KindDevice, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := r.matchDevice(ctx, tx, obj.(*fleetplanev1.Device), selectors); err != nil {
			return fmt.Errorf("device %s: %w", name, err)
		}
	}
	return nil
}

// matchDevice gives the device to the single fleet that selects it, or to none when zero or
// several do, and keeps the MultipleOwners condition in step. The result depends only on the
// device's labels and the fleets' selectors, so it does not depend on the order of triggers.
func (r *runner) matchDevice(
	ctx context.Context, tx store.Tx, device *fleetplanev1.Device, selectors []ownerSelector,
) error {
	owner := device.GetMetadata().GetOwner()
	if owner != "" && !strings.HasPrefix(owner, store.KindFleet+"/") {
		return nil // managed by something other than a fleet
	}

	var matches []string
	for _, s := range selectors {
		if s.selector.Matches(device.GetMetadata().GetLabels()) {
			matches = append(matches, s.fleet)
		}
	}
	wantOwner := ""
	if len(matches) == 1 {
		wantOwner = Key(store.KindFleet, matches[0])
	}

	if owner != wantOwner {
		device.Metadata.Owner = wantOwner
		stored, err := tx.Update(ctx, device)
		if err != nil {
			return err
		}
		device = stored.(*fleetplanev1.Device)
		r.log.DebugContext(ctx, "device owner changed", slog.String("device", device.GetMetadata().GetName()),
			slog.String("old_owner", owner), slog.String("owner", wantOwner))
	}
	return setMultipleOwners(ctx, tx, device, matches)
}

// setMultipleOwners sets the MultipleOwners condition when several fleets match and removes it
// otherwise, writing the status only when it changes.
func setMultipleOwners(ctx context.Context, tx store.Tx, device *fleetplanev1.Device, matches []string) error {
	if len(matches) < 2 {
		conditions, removed := removeCondition(device.GetStatus().GetConditions(), ConditionMultipleOwners)
		if !removed {
			return nil
		}
		device.Status.Conditions = conditions
		_, err := tx.UpdateStatus(ctx, device)
		return err
	}
	message := multipleOwnersPrefix + strings.Join(matches, ", ") + multipleOwnersSuffix
	_, changed, err := updateDeviceCondition(ctx, tx, device, &fleetplanev1.Condition{
		Type:    ConditionMultipleOwners,
		Status:  statusTrue,
		Reason:  reasonMultipleFleetsMatch,
		Message: message,
	})
	if err != nil || !changed {
		return err
	}
	// The device lost its owner, or the set of competing fleets changed: record it once.
	return recordWarning(ctx, tx, store.KindDevice, device.GetMetadata().GetName(),
		TaskFleetSelectorMatch, reasonMultipleFleetsMatch, message)
}

// The MultipleOwners message lists the fleets between these, and contestingFleets parses it.
const (
	multipleOwnersPrefix = "the selectors of several fleets match this device, so none owns it: "
	multipleOwnersSuffix = "; change its labels or the fleets' selectors so that one fleet matches"
)

// contestingFleets returns the fleets named by the device's MultipleOwners condition.
func contestingFleets(device *fleetplanev1.Device) []string {
	c := findCondition(device.GetStatus().GetConditions(), ConditionMultipleOwners)
	if c == nil || c.GetStatus() != statusTrue {
		return nil
	}
	list, ok := strings.CutPrefix(c.GetMessage(), multipleOwnersPrefix)
	if !ok {
		return nil
	}
	list, _ = strings.CutSuffix(list, multipleOwnersSuffix)
	return strings.Split(list, ", ")
}
