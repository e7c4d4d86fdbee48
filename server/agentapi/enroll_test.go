package agentapi

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"strings"
	"testing"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/store"
)

// approve marks an enrollment request approved the way the operator API does: it stores the
// signed certificate and an Approved condition, and creates the device.
func (e *env) approve(name string) {
	e.t.Helper()
	e.inTx(func(ctx context.Context, tx store.Tx) error {
		er, err := getEnrollment(ctx, tx, name)
		if err != nil {
			return err
		}
		cert, err := e.ca.SignCSR([]byte(er.GetSpec().GetCsr()), name)
		if err != nil {
			return err
		}
		er.Status = &fleetplanev1.EnrollmentRequestStatus{
			Certificate: string(cert),
			Conditions:  []*fleetplanev1.Condition{{Type: ConditionApproved, Status: "True"}},
		}
		if _, err := tx.UpdateStatus(ctx, er); err != nil {
			return err
		}
		_, err = tx.Create(ctx, &fleetplanev1.Device{
			Metadata: &fleetplanev1.ObjectMeta{Name: name},
			Spec:     &fleetplanev1.DeviceSpec{Os: &fleetplanev1.DeviceOsSpec{Image: "os:1"}},
		})
		return err
	})
}

func TestEnrollmentFlow(t *testing.T) {
	e := newEnv(t, nil)
	client := e.agentClient()
	ctx := t.Context()
	key, csr := newCSR(t, "gw-1")
	keyHash, err := identity.PublicKeySHA256(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	enroll := func(csr []byte) (*connect.Response[fleetplanev1.EnrollResponse], error) {
		return client.Enroll(ctx, connect.NewRequest(&fleetplanev1.EnrollRequest{
			Name: "gw-1", Csr: string(csr), Labels: map[string]string{"site": "north"},
			DeviceStatus: &fleetplanev1.DeviceStatus{
				SystemInfo: &fleetplanev1.DeviceSystemInfo{Architecture: "arm64"},
			},
		}))
	}
	getCert := func(hash string) (*connect.Response[fleetplanev1.GetEnrollmentCertificateResponse], error) {
		return client.GetEnrollmentCertificate(ctx, connect.NewRequest(
			&fleetplanev1.GetEnrollmentCertificateRequest{Name: "gw-1", PublicKeySha256: hash}))
	}

	resp, err := enroll(csr)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if resp.Msg.GetState() != StatePending {
		t.Errorf("Enroll state = %q, want Pending", resp.Msg.GetState())
	}
	again, err := enroll(csr)
	if err != nil {
		t.Fatalf("Enroll again with the same key: %v", err)
	}
	if again.Msg.GetState() != StatePending {
		t.Errorf("second Enroll state = %q, want Pending", again.Msg.GetState())
	}
	_, otherCSR := newCSR(t, "gw-1")
	if _, err := enroll(otherCSR); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("Enroll with another key: error = %v, want ALREADY_EXISTS", err)
	}

	pending, err := getCert(keyHash)
	if err != nil {
		t.Fatalf("GetEnrollmentCertificate while pending: %v", err)
	}
	if pending.Msg.GetState() != StatePending || pending.Msg.GetCertificate() != "" {
		t.Errorf("pending response = %v, want Pending without a certificate", pending.Msg)
	}
	if _, err := getCert(strings.Repeat("0", 64)); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("GetEnrollmentCertificate with another key hash: error = %v, want PERMISSION_DENIED", err)
	}

	e.approve("gw-1")
	approved, err := getCert(strings.ToUpper(keyHash))
	if err != nil {
		t.Fatalf("GetEnrollmentCertificate after approval: %v", err)
	}
	if approved.Msg.GetState() != StateApproved {
		t.Errorf("state = %q, want Approved", approved.Msg.GetState())
	}
	if approved.Msg.GetCaCertificate() != string(e.ca.CertPEM()) {
		t.Error("response does not carry the CA certificate")
	}

	// The issued certificate opens a stream for the device.
	block, _ := pem.Decode([]byte(approved.Msg.GetCertificate()))
	if block == nil {
		t.Fatalf("certificate %q is not PEM", approved.Msg.GetCertificate())
	}
	cert := tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
	v1 := e.render("gw-1", "one")
	e.connectWith(e.agentClient(cert), "").expectSpec(v1)
}

func TestEnrollStoresRequest(t *testing.T) {
	e := newEnv(t, nil)
	_, csr := newCSR(t, "gw-2")
	_, err := e.agentClient().Enroll(t.Context(), connect.NewRequest(&fleetplanev1.EnrollRequest{
		Name: "gw-2", Csr: string(csr), Labels: map[string]string{"site": "south"},
		DeviceStatus: &fleetplanev1.DeviceStatus{
			SystemInfo: &fleetplanev1.DeviceSystemInfo{Architecture: "arm64"},
		},
	}))
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	var er *fleetplanev1.EnrollmentRequest
	e.inTx(func(ctx context.Context, tx store.Tx) error {
		er, err = getEnrollment(ctx, tx, "gw-2")
		return err
	})
	if er.GetSpec().GetCsr() != string(csr) {
		t.Error("stored CSR differs from the one sent")
	}
	if er.GetSpec().GetLabels()["site"] != "south" {
		t.Errorf("stored labels = %v, want site=south", er.GetSpec().GetLabels())
	}
	if er.GetSpec().GetDeviceStatus().GetSystemInfo().GetArchitecture() != "arm64" {
		t.Error("stored device status lost the architecture")
	}
}

func TestEnrollInvalidInput(t *testing.T) {
	e := newEnv(t, nil)
	client := e.agentClient()
	_, csr := newCSR(t, "gw-1")
	cases := map[string]struct {
		req   *fleetplanev1.EnrollRequest
		field string
	}{
		"mismatched name": {&fleetplanev1.EnrollRequest{Name: "gw-2", Csr: string(csr)}, "csr"},
		"missing name":    {&fleetplanev1.EnrollRequest{Csr: string(csr)}, "name"},
		"invalid name":    {&fleetplanev1.EnrollRequest{Name: "GW_1", Csr: string(csr)}, "name"},
		"garbage csr":     {&fleetplanev1.EnrollRequest{Name: "gw-1", Csr: "hello"}, "csr"},
		"invalid label": {&fleetplanev1.EnrollRequest{
			Name: "gw-1", Csr: string(csr), Labels: map[string]string{"bad key!": "x"},
		}, "labels"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := client.Enroll(t.Context(), connect.NewRequest(tc.req))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("Enroll error = %v, want INVALID_ARGUMENT", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name the field %s", err, tc.field)
			}
		})
	}
}

func TestGetEnrollmentCertificateNotFound(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.agentClient().GetEnrollmentCertificate(t.Context(), connect.NewRequest(
		&fleetplanev1.GetEnrollmentCertificateRequest{Name: "gw-9", PublicKeySha256: strings.Repeat("a", 64)}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("error = %v, want NOT_FOUND", err)
	}
}

func TestEnrollmentStateDenied(t *testing.T) {
	for name, conds := range map[string][]*fleetplanev1.Condition{
		"approved false": {{Type: ConditionApproved, Status: "False"}},
		"denied true":    {{Type: StateDenied, Status: "True"}},
	} {
		er := &fleetplanev1.EnrollmentRequest{Status: &fleetplanev1.EnrollmentRequestStatus{Conditions: conds}}
		if got := enrollmentState(er); got != StateDenied {
			t.Errorf("%s: state = %q, want Denied", name, got)
		}
	}
}
