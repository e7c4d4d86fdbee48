package tasks

import (
	"context"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/events"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Condition types and statuses that the tasks write.
const (
	// ConditionValid is a fleet's: whether its template passed validation.
	ConditionValid = "Valid"
	// ConditionMultipleOwners is a device's: present (True) while several fleets select it.
	ConditionMultipleOwners = "MultipleOwners"
	// ConditionTemplateApplied is a device's: whether its fleet's template rendered for it.
	ConditionTemplateApplied = "TemplateApplied"
	// ConditionSpecValid is a device's: whether its spec rendered for the agent.
	ConditionSpecValid = "SpecValid"

	statusTrue  = "True"
	statusFalse = "False"
)

// TemplateVersionAnnotation is the device annotation naming the template version its spec was
// rendered from.
const TemplateVersionAnnotation = "fleetplane.dev/template-version"

// eventActor is the actor of every event the tasks record.
const eventActor = "service:tasks"

// findCondition returns the condition of the given type, or nil.
func findCondition(conditions []*fleetplanev1.Condition, conditionType string) *fleetplanev1.Condition {
	for _, c := range conditions {
		if c.GetType() == conditionType {
			return c
		}
	}
	return nil
}

// setCondition puts want into conditions, replacing the condition of the same type. It returns
// the new list and false when an equal condition (same type, status, reason, message and
// observed generation) was already there, so the caller can skip the write. The transition time
// is kept when the status did not change.
func setCondition(
	conditions []*fleetplanev1.Condition, want *fleetplanev1.Condition, now time.Time,
) ([]*fleetplanev1.Condition, bool) {
	want.LastTransitionTime = timestamppb.New(now)
	for i, c := range conditions {
		if c.GetType() != want.GetType() {
			continue
		}
		if sameCondition(c, want) {
			return conditions, false
		}
		if c.GetStatus() == want.GetStatus() && c.GetLastTransitionTime() != nil {
			want.LastTransitionTime = c.GetLastTransitionTime()
		}
		out := append([]*fleetplanev1.Condition(nil), conditions...)
		out[i] = want
		return out, true
	}
	return append(append([]*fleetplanev1.Condition(nil), conditions...), want), true
}

func sameCondition(a, b *fleetplanev1.Condition) bool {
	return a.GetType() == b.GetType() &&
		a.GetStatus() == b.GetStatus() &&
		a.GetReason() == b.GetReason() &&
		a.GetMessage() == b.GetMessage() &&
		a.GetObservedGeneration() == b.GetObservedGeneration()
}

// removeCondition returns conditions without the given type, and whether it was there.
func removeCondition(
	conditions []*fleetplanev1.Condition, conditionType string,
) ([]*fleetplanev1.Condition, bool) {
	var out []*fleetplanev1.Condition
	for _, c := range conditions {
		if c.GetType() != conditionType {
			out = append(out, c)
		}
	}
	return out, len(out) != len(conditions)
}

// updateDeviceCondition sets a device condition and writes the status when it changed. It
// returns the device as stored and whether it wrote.
func updateDeviceCondition(
	ctx context.Context, tx store.Tx, device *fleetplanev1.Device, want *fleetplanev1.Condition,
) (*fleetplanev1.Device, bool, error) {
	if device.Status == nil {
		device.Status = &fleetplanev1.DeviceStatus{}
	}
	conditions, changed := setCondition(device.Status.Conditions, want, time.Now())
	if !changed {
		return device, false, nil
	}
	device.Status.Conditions = conditions
	stored, err := tx.UpdateStatus(ctx, device)
	if err != nil {
		return nil, false, err
	}
	return stored.(*fleetplanev1.Device), true, nil
}

// recordWarning records a Warning event about an object, from the named task.
func recordWarning(ctx context.Context, tx store.Tx, kind, name, task, reason, message string) error {
	return events.Record(ctx, tx, events.Entry{
		Kind:      kind,
		Name:      name,
		Reason:    reason,
		Type:      events.Warning,
		Message:   message,
		Actor:     eventActor,
		Component: task,
	})
}

// recordNormal records a Normal event about an object, from the named task.
func recordNormal(ctx context.Context, tx store.Tx, kind, name, task, reason, message string) error {
	return events.Record(ctx, tx, events.Entry{
		Kind:      kind,
		Name:      name,
		Reason:    reason,
		Type:      events.Normal,
		Message:   message,
		Actor:     eventActor,
		Component: task,
	})
}
