package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/agent/apply"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// errDeadStream ends a stream that brought no message for Timing.DeadAfter.
var errDeadStream = errors.New("no message from the server within the dead-stream timeout")

type agentStream = *connect.BidiStreamForClient[fleetplanev1.StreamRequest, fleetplanev1.StreamResponse]

// runStream holds one stream until it fails or ctx ends. It reports the stream as established
// when the server sent at least one message on it.
func (a *Agent) runStream(ctx context.Context) (established bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	stream := a.streamClients[a.server].Stream(ctx)
	defer func() {
		// Cancel first, so that closing the response does not wait for the server.
		cancel()
		stream.CloseRequest()
		stream.CloseResponse()
	}()

	received := make(chan *fleetplanev1.StreamResponse)
	failed := make(chan error, 1)
	go receive(ctx, stream, received, failed)

	hello := &fleetplanev1.AgentHello{
		RenderedVersion:   a.cfg.Applier.Versions().Highest(),
		CapabilityVersion: CapabilityVersion,
		AgentVersion:      Version,
	}
	if err := send(stream, &fleetplanev1.StreamRequest{
		Message: &fleetplanev1.StreamRequest_Hello{Hello: hello},
	}); err != nil {
		return false, a.streamFailure(ctx, err, failed)
	}
	a.connected.Store(true)
	a.log.InfoContext(ctx, "stream opened", "rendered_version", hello.RenderedVersion)

	keepalive := time.NewTicker(a.timing.Keepalive)
	defer keepalive.Stop()
	status := time.NewTicker(a.cfg.StatusInterval)
	defer status.Stop()
	dead := time.NewTimer(a.timing.DeadAfter)
	defer dead.Stop()

	for {
		var err error
		select {
		case <-ctx.Done():
			return established, ctx.Err()
		case err := <-failed:
			return established, err
		case <-dead.C:
			return established, errDeadStream
		case msg := <-received:
			established = true
			dead.Reset(a.timing.DeadAfter)
			err = a.handle(ctx, stream, msg)
		case <-keepalive.C:
			err = send(stream, &fleetplanev1.StreamRequest{
				Message: &fleetplanev1.StreamRequest_Keepalive{Keepalive: &fleetplanev1.Keepalive{}},
			})
		case <-status.C:
			err = a.sendStatus(stream)
		}
		if err != nil {
			return established, a.streamFailure(ctx, err, failed)
		}
	}
}

// receive forwards messages from the stream until it fails, then reports the error.
func receive(
	ctx context.Context,
	stream agentStream,
	received chan<- *fleetplanev1.StreamResponse,
	failed chan<- error,
) {
	for {
		msg, err := stream.Receive()
		if err != nil {
			failed <- err
			return
		}
		select {
		case received <- msg:
		case <-ctx.Done():
			return
		}
	}
}

// streamFailure returns the error that ended the stream after a send failed. A send to a
// broken stream returns io.EOF, and the cause comes from Receive, so it waits for that.
func (a *Agent) streamFailure(ctx context.Context, sendErr error, failed <-chan error) error {
	dead := time.NewTimer(a.timing.DeadAfter)
	defer dead.Stop()
	select {
	case err := <-failed:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-dead.C:
		return sendErr
	}
}

// handle acts on one message from the server.
func (a *Agent) handle(ctx context.Context, stream agentStream, msg *fleetplanev1.StreamResponse) error {
	spec := msg.GetSpec()
	if spec == nil {
		// A keepalive needs no reply. Receiving it has reset the dead-stream timer.
		return nil
	}
	version := spec.GetRenderedVersion()
	current := a.cfg.Applier.Versions()
	if !apply.Newer(version, current.Highest()) {
		a.log.InfoContext(ctx, "ignoring spec that is not newer than the device's",
			"rendered_version", version, "highest_version", current.Highest())
		if current.Applied == "" {
			return nil
		}
		return sendAck(stream, current.Applied)
	}

	if err := a.cfg.Applier.Apply(ctx, spec); err != nil {
		a.log.WarnContext(ctx, "rejecting spec", "rendered_version", version, "err", err)
		reject := &fleetplanev1.SpecReject{RenderedVersion: version, Error: err.Error()}
		if err := send(stream, &fleetplanev1.StreamRequest{
			Message: &fleetplanev1.StreamRequest_Reject{Reject: reject},
		}); err != nil {
			return err
		}
	} else {
		a.log.InfoContext(ctx, "applied spec", "rendered_version", version)
		if err := sendAck(stream, version); err != nil {
			return err
		}
	}
	return a.sendStatus(stream)
}

func (a *Agent) sendStatus(stream agentStream) error {
	status := a.status.build(a.cfg.Applier.Versions())
	return send(stream, &fleetplanev1.StreamRequest{
		Message: &fleetplanev1.StreamRequest_Status{Status: status},
	})
}

func sendAck(stream agentStream, version string) error {
	return send(stream, &fleetplanev1.StreamRequest{
		Message: &fleetplanev1.StreamRequest_Ack{Ack: &fleetplanev1.SpecAck{RenderedVersion: version}},
	})
}

func send(stream agentStream, msg *fleetplanev1.StreamRequest) error {
	if err := stream.Send(msg); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}
