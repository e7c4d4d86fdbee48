package agent

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// Enrollment request states returned by the server.
const (
	statePending  = "Pending"
	stateApproved = "Approved"
	stateDenied   = "Denied"
)

// ErrEnrollmentDenied is returned by Run when an operator denied the enrollment request.
var ErrEnrollmentDenied = errors.New("enrollment request denied")

// enroll submits the enrollment request if needed and polls until it is approved or denied.
func (a *Agent) enroll(ctx context.Context) error {
	if a.id.enrolled() {
		return nil
	}
	a.log.InfoContext(ctx, "enrolling device", "public_key_sha256", a.id.keySHA256)
	b := newBackoff(a.timing.EnrollMinDelay, a.timing.EnrollMaxDelay)
	hookDone := false
	for {
		state, err := a.enrollStep(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err != nil && isPermanentEnrollError(err):
			return err
		case err != nil:
			a.log.WarnContext(ctx, "enrollment call failed; retrying", "err", err,
				"server", a.servers[a.server])
			a.nextServer(ctx)
		case state == stateApproved:
			a.enrolled.Store(true)
			a.log.InfoContext(ctx, "enrollment approved")
			return nil
		case state == stateDenied:
			return fmt.Errorf("device %s: %w: ask an operator to delete the request, "+
				"then start the agent with a new data directory", a.id.name, ErrEnrollmentDenied)
		case state == statePending && !hookDone && a.cfg.OnEnrollPending != nil:
			// Poll again at once after the hook succeeds, since it may have approved the request.
			if err := a.cfg.OnEnrollPending(ctx, a.id.name, a.cfg.Labels); err != nil {
				a.log.WarnContext(ctx, "enrollment pending hook failed; retrying", "err", err)
			} else {
				hookDone = true
				continue
			}
		}
		if err := a.wait(ctx, b.next()); err != nil {
			return err
		}
	}
}

// enrollStep submits the request when it has not been submitted, then requests the
// certificate once and returns the request's state.
func (a *Agent) enrollStep(ctx context.Context) (string, error) {
	if !a.id.submitted {
		if err := a.submitEnrollment(ctx); err != nil {
			return "", err
		}
	}
	resp, err := a.enrollClients[a.server].GetEnrollmentCertificate(ctx,
		connect.NewRequest(&fleetplanev1.GetEnrollmentCertificateRequest{
			Name:            a.id.name,
			PublicKeySha256: a.id.keySHA256,
		}))
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		a.log.WarnContext(ctx, "server has no enrollment request for the device; submitting again")
		return "", a.id.markSubmitted(false)
	case connect.CodePermissionDenied, connect.CodeInvalidArgument:
		// The request under this name belongs to another key.
		return "", &permanentError{err: fmt.Errorf("get enrollment certificate: %w", err)}
	}
	if err != nil {
		return "", fmt.Errorf("get enrollment certificate: %w", err)
	}
	state := resp.Msg.GetState()
	if state == stateApproved {
		if resp.Msg.GetCertificate() == "" {
			// The request is approved but the certificate is not signed yet.
			return statePending, nil
		}
		if err := a.id.storeCertificate([]byte(resp.Msg.GetCertificate()),
			[]byte(resp.Msg.GetCaCertificate())); err != nil {
			return "", &permanentError{err: fmt.Errorf("store enrollment certificate: %w", err)}
		}
	}
	return state, nil
}

func (a *Agent) submitEnrollment(ctx context.Context) error {
	csr, err := a.id.csrPEM()
	if err != nil {
		return &permanentError{err: err}
	}
	status := a.status.build(a.cfg.Applier.Versions())
	_, err = a.enrollClients[a.server].Enroll(ctx, connect.NewRequest(&fleetplanev1.EnrollRequest{
		Name:         a.id.name,
		Csr:          csr,
		DeviceStatus: status,
		Labels:       a.cfg.Labels,
	}))
	switch connect.CodeOf(err) {
	case connect.CodeAlreadyExists:
		// The server returns the state of a request from the same key, so this one is from
		// another key.
		return &permanentError{err: fmt.Errorf("enroll: device name %q is taken by another "+
			"device: start the agent with another --name: %w", a.id.name, err)}
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodePermissionDenied:
		return &permanentError{err: fmt.Errorf("enroll: %w", err)}
	default:
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		a.log.InfoContext(ctx, "enrollment request submitted; waiting for approval")
	}
	if err := a.id.markSubmitted(true); err != nil {
		return &permanentError{err: err}
	}
	return nil
}

// permanentError marks an enrollment failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanentEnrollError(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
