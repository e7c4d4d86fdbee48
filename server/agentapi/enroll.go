package agentapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/server/events"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/store"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

// Enrollment request states.
const (
	StatePending  = "Pending"
	StateApproved = "Approved"
	StateDenied   = "Denied"
)

// ConditionApproved is the enrollment request condition that records the operator's decision:
// status "True" when approved, "False" when denied. A "Denied" condition with status "True"
// also means denied.
const ConditionApproved = "Approved"

// agentService implements AgentService.
type agentService struct {
	fleetplanev1connect.UnimplementedAgentServiceHandler
	s *Service
}

// Enroll stores an enrollment request for a new device, or returns the state of the one that
// the same key submitted before.
func (a *agentService) Enroll(
	ctx context.Context, req *connect.Request[fleetplanev1.EnrollRequest],
) (*connect.Response[fleetplanev1.EnrollResponse], error) {
	msg := req.Msg
	if err := validateName(msg.GetName()); err != nil {
		return nil, err
	}
	csr, err := identity.ParseCSR([]byte(msg.GetCsr()), msg.GetName())
	if err != nil {
		return nil, invalidArgument("csr", fmt.Sprintf("%v; send a PEM CSR signed by the "+
			"device key whose common name is the name field", err))
	}
	if err := validateLabels(msg.GetLabels()); err != nil {
		return nil, err
	}
	keyHash, err := identity.PublicKeySHA256(csr.PublicKey)
	if err != nil {
		return nil, invalidArgument("csr", err.Error())
	}

	var state string
	err = a.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		state, err = a.s.enrollInTx(ctx, tx, msg, keyHash)
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.EnrollResponse{State: state}), nil
}

func (s *Service) enrollInTx(
	ctx context.Context, tx store.Tx, msg *fleetplanev1.EnrollRequest, keyHash string,
) (string, error) {
	existing, err := getEnrollment(ctx, tx, msg.GetName())
	switch {
	case err == nil:
		if !sameKey(existing, keyHash) {
			return "", connect.NewError(connect.CodeAlreadyExists, fmt.Errorf(
				"enrollment request %q exists for another key; choose another device name",
				msg.GetName()))
		}
		return enrollmentState(existing), nil
	case !errors.Is(err, store.ErrNotFound):
		return "", err
	}
	er := &fleetplanev1.EnrollmentRequest{
		Metadata: &fleetplanev1.ObjectMeta{Name: msg.GetName()},
		Spec: &fleetplanev1.EnrollmentRequestSpec{
			Csr:          msg.GetCsr(),
			DeviceStatus: msg.GetDeviceStatus(),
			Labels:       msg.GetLabels(),
		},
	}
	if _, err := tx.Create(ctx, er); err != nil {
		return "", fmt.Errorf("create enrollment request %s: %w", msg.GetName(), err)
	}
	err = events.Record(ctx, tx, events.Entry{
		Kind: store.KindEnrollmentRequest, Name: msg.GetName(),
		Reason: "EnrollmentRequested", Type: events.Normal,
		Message:   "device submitted an enrollment request; approve or deny it",
		Actor:     "device:" + msg.GetName(),
		Component: "agentapi",
	})
	if err != nil {
		return "", err
	}
	return StatePending, nil
}

// GetEnrollmentCertificate returns the state of an enrollment request and, once approved, the
// device certificate and the CA certificate. The caller proves it submitted the request with
// the SHA-256 of the CSR's public key.
func (a *agentService) GetEnrollmentCertificate(
	ctx context.Context, req *connect.Request[fleetplanev1.GetEnrollmentCertificateRequest],
) (*connect.Response[fleetplanev1.GetEnrollmentCertificateResponse], error) {
	name := req.Msg.GetName()
	if err := validateName(name); err != nil {
		return nil, err
	}
	proof := strings.ToLower(req.Msg.GetPublicKeySha256())
	if len(proof) != 64 {
		return nil, invalidArgument("public_key_sha256",
			"must be the 64 hex digits of the SHA-256 of the CSR's DER public key")
	}
	var er *fleetplanev1.EnrollmentRequest
	err := a.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		er, err = getEnrollment(ctx, tx, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound,
			fmt.Errorf("no enrollment request named %q; call Enroll first", name))
	}
	if err != nil {
		return nil, err
	}
	if !sameKey(er, proof) {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New(
			"public_key_sha256 does not match the key of the enrollment request's CSR"))
	}
	resp := &fleetplanev1.GetEnrollmentCertificateResponse{State: enrollmentState(er)}
	if resp.State == StateApproved && er.GetStatus().GetCertificate() != "" {
		resp.Certificate = er.GetStatus().GetCertificate()
		resp.CaCertificate = string(a.s.ca.CertPEM())
	}
	return connect.NewResponse(resp), nil
}

func getEnrollment(ctx context.Context, tx store.Tx, name string) (*fleetplanev1.EnrollmentRequest, error) {
	obj, err := tx.Get(ctx, store.KindEnrollmentRequest, name)
	if err != nil {
		return nil, err
	}
	er, ok := obj.(*fleetplanev1.EnrollmentRequest)
	if !ok {
		return nil, fmt.Errorf("enrollment request %s: store returned a %T", name, obj)
	}
	return er, nil
}

// sameKey reports whether the stored request's CSR has the public key whose hex SHA-256 is
// keyHash. A stored CSR that no longer parses matches nothing.
func sameKey(er *fleetplanev1.EnrollmentRequest, keyHash string) bool {
	csr, err := identity.ParseCSR([]byte(er.GetSpec().GetCsr()), er.GetMetadata().GetName())
	if err != nil {
		return false
	}
	stored, err := identity.PublicKeySHA256(csr.PublicKey)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(stored), []byte(keyHash)) == 1
}

// enrollmentState derives Pending, Approved or Denied from the request's status.
func enrollmentState(er *fleetplanev1.EnrollmentRequest) string {
	for _, c := range er.GetStatus().GetConditions() {
		switch {
		case c.GetType() == ConditionApproved && c.GetStatus() == "True":
			return StateApproved
		case c.GetType() == ConditionApproved && c.GetStatus() == "False",
			c.GetType() == StateDenied && c.GetStatus() == "True":
			return StateDenied
		}
	}
	return StatePending
}

func validateLabels(labels map[string]string) error {
	for k, v := range labels {
		if msgs := k8svalidation.IsQualifiedName(k); len(msgs) > 0 {
			return invalidArgument("labels["+k+"]", "invalid label key: "+msgs[0])
		}
		if msgs := k8svalidation.IsValidLabelValue(v); len(msgs) > 0 {
			return invalidArgument("labels["+k+"]", fmt.Sprintf("invalid label value %q: %s", v, msgs[0]))
		}
	}
	return nil
}

func validateName(name string) error {
	if name == "" {
		return invalidArgument("name", "must be set to the device name")
	}
	if msgs := k8svalidation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return invalidArgument("name", fmt.Sprintf("invalid device name %q: %s", name, msgs[0]))
	}
	return nil
}
