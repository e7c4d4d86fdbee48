package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/events"
	"github.com/fleetplane/fleetplane/store"
)

// maxRejectErrorLength is the longest agent error kept in the SpecRejected condition.
const maxRejectErrorLength = 1024

var keepaliveMessage = &fleetplanev1.StreamResponse{
	Message: &fleetplanev1.StreamResponse_Keepalive{Keepalive: &fleetplanev1.Keepalive{}},
}

// run serves the stream after hello until it ends. It is the only goroutine that sends.
func (sess *session) run(ctx context.Context) error {
	if err := sess.maybeSend(ctx); err != nil {
		return err
	}
	keepalive := time.NewTicker(sess.s.keepalive)
	defer keepalive.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-sess.replaced:
			return errReplaced
		case err := <-sess.readErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return streamEnded(err)
		case msg := <-sess.inbox:
			err = sess.handle(ctx, msg)
		case <-sess.notify:
			if sess.deleted.Load() {
				return deviceError(sess.device, store.ErrNotFound)
			}
			err = sess.maybeSend(ctx)
		case <-keepalive.C:
			err = sess.keepalive()
		}
		if err != nil {
			return err
		}
	}
}

// keepalive sends a keepalive, or ends the stream when the agent has been silent for three
// intervals.
func (sess *session) keepalive() error {
	silent := time.Since(time.Unix(0, sess.lastRecv.Load()))
	if limit := 3 * sess.s.keepalive; silent > limit {
		return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf(
			"no message from the agent for %v; reconnect", limit))
	}
	return sess.stream.Send(keepaliveMessage)
}

func (sess *session) handle(ctx context.Context, msg *fleetplanev1.StreamRequest) error {
	switch m := msg.GetMessage().(type) {
	case *fleetplanev1.StreamRequest_Keepalive:
		return nil
	case *fleetplanev1.StreamRequest_Ack:
		return sess.onAck(ctx, m.Ack)
	case *fleetplanev1.StreamRequest_Reject:
		return sess.onReject(ctx, m.Reject)
	case *fleetplanev1.StreamRequest_Hello:
		return invalidArgument("hello", "send hello only as the first message of a stream")
	default:
		return invalidArgument("message", "unknown stream message; upgrade the server or "+
			"send only messages of capability version 1")
	}
}

// maybeSend sends the device's latest rendered spec when no version is outstanding, the
// latest is newer than what the agent has, and the agent has not rejected it.
func (sess *session) maybeSend(ctx context.Context) error {
	if sess.outstanding != 0 {
		return nil
	}
	var spec *fleetplanev1.RenderedDeviceSpec
	err := sess.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		spec, err = tx.GetRendered(ctx, sess.device)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read rendered spec of device %s: %w", sess.device, err)
	}
	version, err := parseVersion(spec.GetRenderedVersion())
	if err != nil {
		return fmt.Errorf("rendered spec of device %s: %w", sess.device, err)
	}
	if version <= sess.agentVersion || version == sess.rejected {
		return nil
	}
	if err := sess.stream.Send(&fleetplanev1.StreamResponse{
		Message: &fleetplanev1.StreamResponse_Spec{Spec: spec},
	}); err != nil {
		return err
	}
	sess.outstanding, sess.sentAt = version, time.Now()
	sess.known.Store(max(sess.known.Load(), version))
	return nil
}

// clearOutstanding ends the wait for the outstanding version after an ack or reject of
// version, and records the ack latency when version is the one sent.
func (sess *session) clearOutstanding(ctx context.Context, version int64, acked bool) {
	if sess.outstanding == 0 {
		return
	}
	if version == sess.outstanding && acked {
		sess.s.metrics.renderToAck(ctx, time.Since(sess.sentAt))
	}
	// The agent acknowledges or rejects every spec in order, naming the version sent or, for a
	// spec that is not newer than its own, its current version. Either way the wait is over.
	sess.outstanding = 0
}

func (sess *session) onAck(ctx context.Context, ack *fleetplanev1.SpecAck) error {
	version, err := parseVersion(ack.GetRenderedVersion())
	if err != nil {
		return invalidArgument("ack.rendered_version", err.Error())
	}
	sess.clearOutstanding(ctx, version, true)
	sess.agentVersion = max(sess.agentVersion, version)
	sess.known.Store(max(sess.known.Load(), version))
	_, err = sess.s.updateDeviceStatus(ctx, sess.device, "",
		func(ctx context.Context, tx store.Tx, status *fleetplanev1.DeviceStatus) error {
			return sess.applyAck(ctx, tx, status, version)
		})
	if err != nil {
		return deviceError(sess.device, fmt.Errorf("record ack of version %d: %w", version, err))
	}
	return sess.maybeSend(ctx)
}

// applyAck records an applied version in status. A version above the latest rendered one
// cannot have come from this server, so it is logged and ignored.
func (sess *session) applyAck(
	ctx context.Context, tx store.Tx, status *fleetplanev1.DeviceStatus, version int64,
) error {
	latest, err := latestVersion(ctx, tx, sess.device)
	if err != nil {
		return err
	}
	if version > latest {
		sess.s.log.WarnContext(ctx, "agent acknowledged a version that was never rendered",
			"device", sess.device, "rendered_version", version, "latest_version", latest)
		return nil
	}
	status.Config = &fleetplanev1.DeviceConfigStatus{RenderedVersion: strconv.FormatInt(version, 10)}
	updated := updatedOutOfDate
	if version == latest {
		updated = updatedUpToDate
	}
	status.Updated = &fleetplanev1.DeviceUpdatedStatus{Status: updated}
	if version > rejectedVersion(status) {
		// A newer version applied, so the rejection no longer describes the device.
		status.Conditions = removeCondition(status.Conditions, ConditionSpecRejected)
	}
	return nil
}

func (sess *session) onReject(ctx context.Context, reject *fleetplanev1.SpecReject) error {
	version, err := parseVersion(reject.GetRenderedVersion())
	if err != nil {
		return invalidArgument("reject.rendered_version", err.Error())
	}
	if version == 0 {
		return invalidArgument("reject.rendered_version", "must be set to the rejected version")
	}
	sess.clearOutstanding(ctx, version, false)
	sess.rejected = version
	sess.known.Store(max(sess.known.Load(), version))
	sess.s.metrics.versionRejected(ctx)
	message := truncate(reject.GetError(), maxRejectErrorLength)
	sess.s.log.WarnContext(ctx, "agent rejected rendered version",
		"device", sess.device, "rendered_version", version, "err", message)
	_, err = sess.s.updateDeviceStatus(ctx, sess.device, "",
		func(ctx context.Context, tx store.Tx, status *fleetplanev1.DeviceStatus) error {
			return recordReject(ctx, tx, sess.device, status, version, message)
		})
	if err != nil {
		return deviceError(sess.device, fmt.Errorf("record reject of version %d: %w", version, err))
	}
	return sess.maybeSend(ctx)
}

func recordReject(
	ctx context.Context, tx store.Tx, device string, status *fleetplanev1.DeviceStatus,
	version int64, message string,
) error {
	text := fmt.Sprintf("version %d: %s", version, message)
	status.Conditions = removeCondition(status.Conditions, ConditionSpecRejected)
	status.Conditions = append(status.Conditions, &fleetplanev1.Condition{
		Type:               ConditionSpecRejected,
		Status:             "True",
		Reason:             "Rejected",
		Message:            text,
		LastTransitionTime: timestampNow(),
	})
	status.Updated = &fleetplanev1.DeviceUpdatedStatus{Status: updatedOutOfDate, Info: text}
	return events.Record(ctx, tx, events.Entry{
		Kind: store.KindDevice, Name: device,
		Reason: "SpecRejected", Type: events.Warning,
		Message:   "agent rejected rendered " + text,
		Actor:     "device:" + device,
		Component: "agentapi",
	})
}

// rejectedVersion returns the version named by the SpecRejected condition, or 0.
func rejectedVersion(status *fleetplanev1.DeviceStatus) int64 {
	for _, c := range status.GetConditions() {
		if c.GetType() != ConditionSpecRejected || c.GetStatus() != "True" {
			continue
		}
		rest, ok := strings.CutPrefix(c.GetMessage(), "version ")
		if !ok {
			return 0
		}
		digits, _, _ := strings.Cut(rest, ":")
		n, err := strconv.ParseInt(digits, 10, 64)
		if err != nil {
			return 0
		}
		return n
	}
	return 0
}

// latestVersion returns the device's latest rendered version, or 0 when it has none.
func latestVersion(ctx context.Context, tx store.Tx, device string) (int64, error) {
	spec, err := tx.GetRendered(ctx, device)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return parseVersion(spec.GetRenderedVersion())
}

func removeCondition(conditions []*fleetplanev1.Condition, conditionType string) []*fleetplanev1.Condition {
	out := conditions[:0:0]
	for _, c := range conditions {
		if c.GetType() != conditionType {
			out = append(out, c)
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cutting inside a multi-byte character would leave invalid UTF-8, which protobuf rejects.
	return strings.ToValidUTF8(s[:n], "") + "..."
}
