package server

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/internal/validation"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Enrollment request condition types.
const (
	conditionApproved = "Approved"
	conditionDenied   = "Denied"
)

func newEnrollmentRequests(s *Server) *resource[*fleetplanev1.EnrollmentRequest] {
	return &resource[*fleetplanev1.EnrollmentRequest]{
		s: s, kind: store.KindEnrollmentRequest, field: "enrollmentRequest",
		validate: func(_ context.Context, r *fleetplanev1.EnrollmentRequest) error {
			return validation.EnrollmentRequest("enrollmentRequest", r).Err()
		},
	}
}

// enrollmentService serves EnrollmentRequestService.
type enrollmentService struct {
	s *Server
	r *resource[*fleetplanev1.EnrollmentRequest]
}

// approve approves or denies the named request in one transaction. Approval signs the CSR,
// creates the device with the approval labels and stores the certificate in the request.
func (h *enrollmentService) approve(
	ctx context.Context,
	req *fleetplanev1.ApproveEnrollmentRequestRequest,
) (*fleetplanev1.EnrollmentRequest, error) {
	name := req.GetName()
	if err := validation.Name("name", name).Err(); err != nil {
		return nil, err
	}
	if err := validation.Labels("labels", req.GetLabels()).Err(); err != nil {
		return nil, err
	}
	if req.GetApproved() && h.s.signer == nil {
		return nil, failedPrecondition("the server has no certificate authority, so it cannot " +
			"approve enrollment requests; start it with a certificate authority configured")
	}
	var out *fleetplanev1.EnrollmentRequest
	err := h.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		got, err := tx.Get(ctx, store.KindEnrollmentRequest, name)
		if err != nil {
			return err
		}
		er := got.(*fleetplanev1.EnrollmentRequest)
		if decided := decision(er); decided != "" {
			return failedPrecondition(fmt.Sprintf("enrollment request %s is already %s; "+
				"delete it and let the device submit a new one to decide again",
				name, decided))
		}
		if req.GetApproved() {
			err = h.grant(ctx, tx, er, req.GetLabels())
		} else {
			deny(er, req.GetLabels())
		}
		if err != nil {
			return err
		}
		updated, err := tx.UpdateStatus(ctx, er)
		if err != nil {
			return err
		}
		out = updated.(*fleetplanev1.EnrollmentRequest)
		reason, action := "Approved", "approved"
		if !req.GetApproved() {
			reason, action = "Denied", "denied"
		}
		return h.r.record(ctx, tx, name, reason, action)
	})
	return out, err
}

// decision returns "approved" or "denied" when the request was decided, or "".
func decision(er *fleetplanev1.EnrollmentRequest) string {
	for _, c := range er.GetStatus().GetConditions() {
		if c.GetStatus() != "True" {
			continue
		}
		switch c.GetType() {
		case conditionApproved:
			return "approved"
		case conditionDenied:
			return "denied"
		}
	}
	return ""
}

// grant signs the request's CSR, creates its device and fills in the approved status.
func (h *enrollmentService) grant(
	ctx context.Context,
	tx store.Tx,
	er *fleetplanev1.EnrollmentRequest,
	labels map[string]string,
) error {
	name := er.GetMetadata().GetName()
	// The device gets the labels it asked for, with the approval's labels on top.
	merged := maps.Clone(er.GetSpec().GetLabels())
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, labels)
	labels = merged
	if err := validation.Labels("labels", labels).Err(); err != nil {
		return err
	}
	cert, err := h.s.signer.SignCSR([]byte(er.GetSpec().GetCsr()), name)
	if err != nil {
		return fmt.Errorf("sign certificate for device %s: %w", name, err)
	}
	device := &fleetplanev1.Device{
		ApiVersion: store.APIVersion,
		Kind:       store.KindDevice,
		Metadata:   &fleetplanev1.ObjectMeta{Name: name, Labels: labels},
		Spec:       &fleetplanev1.DeviceSpec{},
	}
	if _, err := tx.Create(ctx, device); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf(
				"a device named %s already exists; delete it before approving this request", name))
		}
		return err
	}
	err = h.r.recordFor(ctx, tx, store.KindDevice, name, "Created", "created by enrollment")
	if err != nil {
		return err
	}
	status := statusOf(er)
	status.Certificate = string(cert)
	status.Approval = approval(true, labels)
	status.Conditions = append(status.Conditions, &fleetplanev1.Condition{
		Type: conditionApproved, Status: "True", Reason: "ManuallyApproved",
		Message: "approved by " + anonymousActor, LastTransitionTime: timestamppb.Now()})
	return nil
}

func deny(er *fleetplanev1.EnrollmentRequest, labels map[string]string) {
	status := statusOf(er)
	status.Approval = approval(false, labels)
	status.Conditions = append(status.Conditions, &fleetplanev1.Condition{
		Type: conditionDenied, Status: "True", Reason: "ManuallyDenied",
		Message: "denied by " + anonymousActor, LastTransitionTime: timestamppb.Now()})
}

func statusOf(er *fleetplanev1.EnrollmentRequest) *fleetplanev1.EnrollmentRequestStatus {
	if er.Status == nil {
		er.Status = &fleetplanev1.EnrollmentRequestStatus{}
	}
	return er.Status
}

func approval(approved bool, labels map[string]string) *fleetplanev1.EnrollmentRequestApproval {
	return &fleetplanev1.EnrollmentRequestApproval{
		Approved: approved, Labels: labels, ApprovedBy: anonymousActor,
		ApprovedAt: timestamppb.Now()}
}

func (h *enrollmentService) ApproveEnrollmentRequest(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ApproveEnrollmentRequestRequest],
) (*connect.Response[fleetplanev1.ApproveEnrollmentRequestResponse], error) {
	obj, err := h.approve(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(
		&fleetplanev1.ApproveEnrollmentRequestResponse{EnrollmentRequest: obj}), nil
}

func (h *enrollmentService) GetEnrollmentRequest(
	ctx context.Context,
	req *connect.Request[fleetplanev1.GetEnrollmentRequestRequest],
) (*connect.Response[fleetplanev1.GetEnrollmentRequestResponse], error) {
	obj, err := h.r.get(ctx, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.GetEnrollmentRequestResponse{EnrollmentRequest: obj}), nil
}

func (h *enrollmentService) ListEnrollmentRequests(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListEnrollmentRequestsRequest],
) (*connect.Response[fleetplanev1.ListEnrollmentRequestsResponse], error) {
	page, err := h.r.list(ctx, req.Msg.GetOptions())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.ListEnrollmentRequestsResponse{
		EnrollmentRequests: page.items,
		NextPageToken:      page.nextPageToken, ResourceVersion: page.resourceVersion}), nil
}

func (h *enrollmentService) CreateEnrollmentRequest(
	ctx context.Context,
	req *connect.Request[fleetplanev1.CreateEnrollmentRequestRequest],
) (*connect.Response[fleetplanev1.CreateEnrollmentRequestResponse], error) {
	obj, err := h.r.create(ctx, req.Msg.GetEnrollmentRequest())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(
		&fleetplanev1.CreateEnrollmentRequestResponse{EnrollmentRequest: obj}), nil
}

func (h *enrollmentService) DeleteEnrollmentRequest(
	ctx context.Context,
	req *connect.Request[fleetplanev1.DeleteEnrollmentRequestRequest],
) (*connect.Response[fleetplanev1.DeleteEnrollmentRequestResponse], error) {
	if err := h.r.delete(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteEnrollmentRequestResponse{}), nil
}

func (h *enrollmentService) WatchEnrollmentRequests(
	ctx context.Context,
	req *connect.Request[fleetplanev1.WatchEnrollmentRequestsRequest],
	stream *connect.ServerStream[fleetplanev1.WatchEnrollmentRequestsResponse],
) error {
	return h.r.watch(ctx, req.Msg.GetOptions(), func() error { return stream.Send(nil) },
		func(typ fleetplanev1.WatchEventType, obj *fleetplanev1.EnrollmentRequest, version int64) error {
			return stream.Send(&fleetplanev1.WatchEnrollmentRequestsResponse{
				Type: typ, EnrollmentRequest: obj, ResourceVersion: formatVersion(version)})
		})
}
