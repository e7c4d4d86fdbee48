package agenttest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/agent/apply"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
)

// Stream accepts a stream from a device with a client certificate and hands it to the test,
// or serves it automatically when SetAutoSpec was called.
func (f *Server) Stream(
	ctx context.Context,
	stream *connect.BidiStream[fleetplanev1.StreamRequest, fleetplanev1.StreamResponse],
) error {
	device, _ := ctx.Value(deviceKey{}).(string)
	if device == "" {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("client certificate required"))
	}
	f.mu.Lock()
	streamErr, auto := f.streamErr, f.autoSpec
	f.mu.Unlock()
	if streamErr != nil {
		return streamErr
	}
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("first message must be hello"))
	}
	if auto != nil {
		return f.serveAuto(stream, first.GetHello(), auto)
	}
	s := &Stream{
		Device: device, Hello: first.GetHello(),
		recv:  make(chan *fleetplanev1.StreamRequest, 64),
		sends: make(chan sendRequest), end: make(chan error, 1),
	}
	go func() {
		defer close(s.recv)
		for {
			msg, err := stream.Receive()
			if err != nil {
				return
			}
			s.recv <- msg
		}
	}()
	f.streams <- s
	// Only this goroutine writes to the stream, so that no write can race with the handler's
	// return.
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.end:
			return err
		case req := <-s.sends:
			req.done <- stream.Send(req.msg)
		}
	}
}

// sendRequest is a request to the stream's handler to send msg and report the result on done.
type sendRequest struct {
	msg  *fleetplanev1.StreamResponse
	done chan error
}

// serveAuto sends spec when the agent's version is older and counts acknowledgements until
// the stream ends.
func (f *Server) serveAuto(
	stream *connect.BidiStream[fleetplanev1.StreamRequest, fleetplanev1.StreamResponse],
	hello *fleetplanev1.AgentHello,
	spec *fleetplanev1.RenderedDeviceSpec,
) error {
	if apply.Newer(spec.GetRenderedVersion(), hello.GetRenderedVersion()) {
		err := stream.Send(&fleetplanev1.StreamResponse{
			Message: &fleetplanev1.StreamResponse_Spec{Spec: spec},
		})
		if err != nil {
			return err
		}
	}
	for {
		msg, err := stream.Receive()
		if err != nil {
			return nil
		}
		if msg.GetAck() != nil {
			f.mu.Lock()
			f.acks++
			f.mu.Unlock()
		}
	}
}

// NextStream waits for an agent to open a stream.
func (f *Server) NextStream(t testing.TB) *Stream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(Timeout):
		t.Fatal("timed out waiting for a stream")
		return nil
	}
}

// SendSpec sends spec on the stream.
func (s *Stream) SendSpec(t testing.TB, spec *fleetplanev1.RenderedDeviceSpec) {
	t.Helper()
	s.send(t, &fleetplanev1.StreamResponse{Message: &fleetplanev1.StreamResponse_Spec{Spec: spec}})
}

// SendKeepalive sends a keepalive on the stream.
func (s *Stream) SendKeepalive(t testing.TB) {
	t.Helper()
	s.send(t, &fleetplanev1.StreamResponse{
		Message: &fleetplanev1.StreamResponse_Keepalive{Keepalive: &fleetplanev1.Keepalive{}},
	})
}

func (s *Stream) send(t testing.TB, msg *fleetplanev1.StreamResponse) {
	t.Helper()
	req := sendRequest{msg: msg, done: make(chan error, 1)}
	select {
	case s.sends <- req:
	case <-time.After(Timeout):
		t.Fatal("send: stream handler has returned")
	}
	if err := <-req.done; err != nil {
		t.Fatalf("send: %v", err)
	}
}

// Next returns the next message from the agent for which keep returns true, skipping others.
func (s *Stream) Next(
	t testing.TB,
	keep func(*fleetplanev1.StreamRequest) bool,
) *fleetplanev1.StreamRequest {
	t.Helper()
	deadline := time.After(Timeout)
	for {
		select {
		case msg, ok := <-s.recv:
			if !ok {
				t.Fatal("stream closed while waiting for a message")
			}
			if keep(msg) {
				return msg
			}
		case <-deadline:
			t.Fatal("timed out waiting for a message from the agent")
		}
	}
}

// IsAnswer matches an ack or a reject.
func IsAnswer(m *fleetplanev1.StreamRequest) bool { return m.GetAck() != nil || m.GetReject() != nil }

// IsStatus matches a status report.
func IsStatus(m *fleetplanev1.StreamRequest) bool { return m.GetStatus() != nil }

// IsKeepalive matches a keepalive.
func IsKeepalive(m *fleetplanev1.StreamRequest) bool { return m.GetKeepalive() != nil }

// approver is the EnrollmentRequestService that only implements ApproveEnrollmentRequest.
type approver struct {
	fleetplanev1connect.UnimplementedEnrollmentRequestServiceHandler
	f *Server
}

func (f *Server) startApprover() {
	mux := http.NewServeMux()
	mux.Handle(fleetplanev1connect.NewEnrollmentRequestServiceHandler(&approver{f: f}))
	srv := httptest.NewServer(mux)
	f.t.Cleanup(srv.Close)
	f.ApproveURL = srv.URL
}

func (a *approver) ApproveEnrollmentRequest(
	_ context.Context,
	req *connect.Request[fleetplanev1.ApproveEnrollmentRequestRequest],
) (*connect.Response[fleetplanev1.ApproveEnrollmentRequestResponse], error) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	name := req.Msg.GetName()
	if _, ok := a.f.enrolled[name]; !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such enrollment request"))
	}
	a.f.approved[name] = req.Msg.GetApproved()
	return connect.NewResponse(&fleetplanev1.ApproveEnrollmentRequestResponse{}), nil
}

// End makes the server end the stream with err; nil ends it normally.
func (s *Stream) End(err error) {
	select {
	case s.end <- err:
	default:
	}
}
