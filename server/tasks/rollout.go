package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/internal/validation"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
)

// Reasons of the device's TemplateApplied condition and of its events.
const (
	reasonTemplateApplied   = "TemplateApplied"
	reasonMissingLabel      = "MissingLabel"
	reasonTemplateNotRender = "TemplateRenderFailed"
)

// rolloutTarget is the compiled latest template version of a fleet, which a rollout applies.
type rolloutTarget struct {
	fleet    string
	version  string
	template *CompiledTemplate
}

// fleetRollout runs FleetRollout. Key Fleet/NAME rolls the fleet's latest template version out
// to every device the fleet owns; key Device/NAME rolls it out to one device.
func (r *runner) fleetRollout(ctx context.Context, key string) error {
	kind, name, err := parseKey(key)
	if err != nil {
		return permanent(err)
	}
	switch kind {
	case store.KindDevice:
		return r.deps.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			return r.rollDevice(ctx, tx, name)
		})
	case store.KindFleet:
		return r.rollFleet(ctx, name)
	}
	return permanent(fmt.Errorf("invalid task key %q: want Device/NAME or Fleet/NAME", key))
}

// rollFleet applies the fleet's latest template version to every device it owns.
func (r *runner) rollFleet(ctx context.Context, fleet string) error {
	var target *rolloutTarget
	var devices []string
	err := r.deps.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		target, err = loadTarget(ctx, tx, fleet)
		if err != nil || target == nil {
			return err
		}
		devices = devices[:0]
		opts := store.ListOptions{FieldSelector: "metadata.owner=" + Key(store.KindFleet, fleet)}
		return listDevices(ctx, tx, opts, func(d *fleetplanev1.Device) error {
			devices = append(devices, d.GetMetadata().GetName())
			return nil
		})
	})
	if err != nil || target == nil {
		return err
	}

	// TODO: every owned device gets the new version at once; rollout batches
	// (rolloutPolicy.deviceSelection) and the disruption budget belong here.
	return r.inBatches(ctx, devices, func(ctx context.Context, tx store.Tx, batch []string) error {
		for _, name := range batch {
			obj, err := tx.Get(ctx, store.KindDevice, name)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			device := obj.(*fleetplanev1.Device)
			if device.GetMetadata().GetOwner() != Key(store.KindFleet, fleet) {
				continue // released since it was listed
			}
			if err := r.applyTemplate(ctx, tx, device, target); err != nil {
				return fmt.Errorf("device %s: %w", name, err)
			}
		}
		return nil
	})
}

// rollDevice applies the latest template version of the device's owning fleet to the device.
// It does nothing for a device without a fleet owner or whose fleet has no template version.
func (r *runner) rollDevice(ctx context.Context, tx store.Tx, name string) error {
	obj, err := tx.Get(ctx, store.KindDevice, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	device := obj.(*fleetplanev1.Device)
	fleet, ok := strings.CutPrefix(device.GetMetadata().GetOwner(), store.KindFleet+"/")
	if !ok {
		return nil
	}
	target, err := loadTarget(ctx, tx, fleet)
	if err != nil || target == nil {
		return err
	}
	return r.applyTemplate(ctx, tx, device, target)
}

// loadTarget returns the fleet's latest template version, compiled, or nil when the fleet does
// not exist or has no template version yet.
func loadTarget(ctx context.Context, tx store.Tx, fleet string) (*rolloutTarget, error) {
	if _, err := tx.Get(ctx, store.KindFleet, fleet); errors.Is(err, store.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	tv, err := latestTemplateVersion(ctx, tx, fleet)
	if err != nil || tv == nil {
		return nil, err
	}
	compiled, errs := CompileTemplate(tv.GetStatus().GetTemplate().GetSpec())
	if len(errs) > 0 {
		// FleetValidate checked the template before it made the version, so only a version
		// written by something else gets here.
		return nil, permanent(fmt.Errorf("template version %s is invalid: %w",
			tv.GetMetadata().GetName(), errors.Join(errs...)))
	}
	return &rolloutTarget{fleet: fleet, version: tv.GetMetadata().GetName(), template: compiled}, nil
}

// applyTemplate renders the target for the device and writes the device's spec and template
// version annotation when they differ. A render failure becomes the device's TemplateApplied
// condition, and the device keeps its previous spec.
func (r *runner) applyTemplate(
	ctx context.Context, tx store.Tx, device *fleetplanev1.Device, target *rolloutTarget,
) error {
	name := device.GetMetadata().GetName()
	spec, renderErr := target.template.Render(name, device.GetMetadata().GetLabels())
	if renderErr == nil {
		// Fleet validation checks the template's literal text only, so a label value or a
		// function such as replace can still render a path with ".." or a relative path.
		renderErr = validation.DeviceSpec("spec", spec).Err()
	}
	if renderErr != nil {
		return r.reportRenderFailure(ctx, tx, device, target, renderErr)
	}

	meta := device.GetMetadata()
	current := proto.Equal(device.GetSpec(), spec) &&
		meta.GetAnnotations()[TemplateVersionAnnotation] == target.version
	if !current {
		device.Spec = spec
		if meta.Annotations == nil {
			meta.Annotations = make(map[string]string)
		}
		meta.Annotations[TemplateVersionAnnotation] = target.version
		stored, err := tx.Update(ctx, device)
		if err != nil {
			return err
		}
		device = stored.(*fleetplanev1.Device)
		r.log.DebugContext(ctx, "device spec rolled out", slog.String("device", name),
			slog.String("fleet", target.fleet), slog.String("template_version", target.version))
	}
	_, _, err := updateDeviceCondition(ctx, tx, device, &fleetplanev1.Condition{
		Type:    ConditionTemplateApplied,
		Status:  statusTrue,
		Reason:  reasonTemplateApplied,
		Message: "template version " + target.version,
	})
	return err
}

// reportRenderFailure sets TemplateApplied to False with the render error and, when the
// condition changed, records a Warning event on the device.
func (r *runner) reportRenderFailure(
	ctx context.Context, tx store.Tx, device *fleetplanev1.Device, target *rolloutTarget, renderErr error,
) error {
	reason := reasonTemplateNotRender
	var missing *MissingLabelError
	if errors.As(renderErr, &missing) {
		reason = reasonMissingLabel
	}
	message := fmt.Sprintf("template version %s: %s", target.version,
		strings.ReplaceAll(renderErr.Error(), "\n", "; "))
	_, changed, err := updateDeviceCondition(ctx, tx, device, &fleetplanev1.Condition{
		Type:    ConditionTemplateApplied,
		Status:  statusFalse,
		Reason:  reason,
		Message: message,
	})
	if err != nil || !changed {
		return err
	}
	r.log.WarnContext(ctx, "fleet template does not render for device",
		slog.String("device", device.GetMetadata().GetName()), slog.String("fleet", target.fleet),
		slog.Any("err", renderErr))
	return recordWarning(ctx, tx, store.KindDevice, device.GetMetadata().GetName(),
		TaskFleetRollout, reason, message)
}
