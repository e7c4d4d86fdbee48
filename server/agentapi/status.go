package agentapi

import (
	"context"
	"fmt"
	"sync"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/tasks"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
)

// ConditionSpecRejected is the device condition that records the last rendered version the
// agent rejected. Its message is "version N: <error>", and the server never sends version N
// again.
const ConditionSpecRejected = "SpecRejected"

// Device updated statuses that the server sets from acks and rejects.
const (
	updatedUpToDate  = "UpToDate"
	updatedOutOfDate = "OutOfDate"
)

// serverConditions are the device condition types that the server sets. An agent's status
// report cannot add, change or remove them.
var serverConditions = map[string]bool{
	ConditionSpecRejected:          true,
	tasks.ConditionValid:           true,
	tasks.ConditionMultipleOwners:  true,
	tasks.ConditionTemplateApplied: true,
	tasks.ConditionSpecValid:       true,
}

// statusWriteTimeout bounds one status transaction, which keeps running after the stream ends.
const statusWriteTimeout = 10 * time.Second

// mergeAgentStatus copies into status the fields that the agent owns from reported: summary,
// system info, resources, applications and the conditions of types the server does not set.
func mergeAgentStatus(status, reported *fleetplanev1.DeviceStatus) {
	status.Summary = reported.GetSummary()
	status.SystemInfo = reported.GetSystemInfo()
	status.Resources = reported.GetResources()
	status.Applications = reported.GetApplications()
	conditions := make([]*fleetplanev1.Condition, 0, len(status.GetConditions())+len(reported.GetConditions()))
	for _, c := range status.GetConditions() {
		if serverConditions[c.GetType()] {
			conditions = append(conditions, c)
		}
	}
	for _, c := range reported.GetConditions() {
		if !serverConditions[c.GetType()] {
			conditions = append(conditions, c)
		}
	}
	status.Conditions = conditions
}

// statusUpdate changes a copy of a device's status inside a transaction.
type statusUpdate func(ctx context.Context, tx store.Tx, status *fleetplanev1.DeviceStatus) error

// updateDeviceStatus reads device name, applies update to a copy of its status and writes it
// back in one transaction. A non-empty resourceVersion must match the stored one, or the
// result is store.ErrConflict. The last-seen time is left out, because it lives apart.
func (s *Service) updateDeviceStatus(
	ctx context.Context, name, resourceVersion string, update statusUpdate,
) (*fleetplanev1.Device, error) {
	var written *fleetplanev1.Device
	err := s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		device, err := getDevice(ctx, tx, name)
		if err != nil {
			return err
		}
		if resourceVersion != "" && resourceVersion != device.GetMetadata().GetResourceVersion() {
			return fmt.Errorf("update status of device %s: %w", name, store.ErrConflict)
		}
		status := &fleetplanev1.DeviceStatus{}
		if device.GetStatus() != nil {
			status = proto.Clone(device.GetStatus()).(*fleetplanev1.DeviceStatus)
		}
		status.LastSeen = nil
		if err := update(ctx, tx, status); err != nil {
			return err
		}
		device.Status = status
		obj, err := tx.UpdateStatus(ctx, device)
		if err != nil {
			return fmt.Errorf("update status of device %s: %w", name, err)
		}
		written = obj.(*fleetplanev1.Device)
		return nil
	})
	return written, err
}

// statusSlot holds the latest status report of one stream that is not written yet. A new
// report replaces an unwritten one, so a slow store drops intermediate reports instead of
// queueing them.
type statusSlot struct {
	mu     sync.Mutex
	latest *fleetplanev1.DeviceStatus // guarded by mu
	ready  chan struct{}              // capacity 1; signalled when latest is set
}

func newStatusSlot() *statusSlot {
	return &statusSlot{ready: make(chan struct{}, 1)}
}

// put stores report as the latest one without blocking.
func (s *statusSlot) put(report *fleetplanev1.DeviceStatus) {
	s.mu.Lock()
	s.latest = report
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// take removes and returns the latest report, or nil.
func (s *statusSlot) take() *fleetplanev1.DeviceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	report := s.latest
	s.latest = nil
	return report
}

// writeStatuses writes the reports put into the session's slot, one at a time, until done is
// closed. A report that is still unwritten when done closes is dropped.
func (sess *session) writeStatuses(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-sess.status.ready:
		}
		report := sess.status.take()
		if report == nil {
			continue
		}
		if hook := sess.s.beforeStatusWrite; hook != nil {
			hook(sess.device)
		}
		sess.writeStatus(report)
	}
}

func (sess *session) writeStatus(report *fleetplanev1.DeviceStatus) {
	ctx, cancel := context.WithTimeout(context.Background(), statusWriteTimeout)
	defer cancel()
	_, err := sess.s.updateDeviceStatus(ctx, sess.device, "",
		func(_ context.Context, _ store.Tx, status *fleetplanev1.DeviceStatus) error {
			mergeAgentStatus(status, report)
			return nil
		})
	if err != nil {
		sess.s.log.WarnContext(ctx, "write device status failed", "device", sess.device, "err", err)
	}
}
