package agentapi

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/store"
)

// errNoCertificate is the UNAUTHENTICATED error for a call that needs a device certificate.
var errNoCertificate = connect.NewError(connect.CodeUnauthenticated, errors.New(
	"this call requires the device's client certificate; the agent must enroll first"))

// errReplaced ends a stream when the same device opens another one.
var errReplaced = connect.NewError(connect.CodeAborted,
	errors.New("a newer stream from the same device replaced this one"))

// Reasons for fleetplane_agent_streams_rejected_total.
const (
	rejectUnauthenticated = "unauthenticated"
	rejectRateLimited     = "rate_limited"
	rejectNoHello         = "no_hello"
	rejectUnknownDevice   = "unknown_device"
)

type bidiStream = connect.BidiStream[fleetplanev1.StreamRequest, fleetplanev1.StreamResponse]

// Stream serves one agent stream. See the package documentation for the protocol.
func (a *agentService) Stream(ctx context.Context, stream *bidiStream) error {
	s := a.s
	device, ok := identity.DeviceFromContext(ctx)
	if !ok {
		s.metrics.streamRejected(ctx, rejectUnauthenticated)
		return errNoCertificate
	}
	if !s.admit.allow(time.Now()) {
		s.metrics.streamRejected(ctx, rejectRateLimited)
		return connect.NewError(connect.CodeUnavailable,
			errors.New("the server is admitting too many streams; retry with backoff"))
	}

	sess := newSession(s, device, stream)
	done := make(chan struct{})
	defer close(done)
	go sess.read(done)

	hello, err := sess.awaitHello(ctx)
	if err != nil {
		s.metrics.streamRejected(ctx, rejectNoHello)
		return err
	}
	if err := sess.start(ctx, hello); err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			s.metrics.streamRejected(ctx, rejectUnknownDevice)
		}
		return err
	}

	s.register(sess)
	defer s.unregister(sess)
	go sess.writeStatuses(done)
	s.log.InfoContext(ctx, "agent stream opened", "device", device,
		"rendered_version", hello.GetRenderedVersion(), "agent_version", hello.GetAgentVersion())
	err = sess.run(ctx)
	s.log.InfoContext(ctx, "agent stream closed", "device", device, "err", err)
	return err
}

// register makes sess the device's stream, closing the one it replaces.
func (s *Service) register(sess *session) {
	s.mu.Lock()
	old := s.sessions[sess.device]
	s.sessions[sess.device] = sess
	s.mu.Unlock()
	if old != nil {
		old.replace()
	}
	s.seen.touch(sess.device)
	if s.replica != "" {
		s.sessLog.set(sess.device, true)
	}
}

// unregister removes sess unless a newer stream already replaced it.
func (s *Service) unregister(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[sess.device] == sess {
		delete(s.sessions, sess.device)
		if s.replica != "" {
			s.sessLog.set(sess.device, false)
		}
	}
}

// session is the server side of one agent stream.
type session struct {
	s      *Service
	device string
	stream *bidiStream

	// Written by the read goroutine, read by others.
	inbox    chan *fleetplanev1.StreamRequest // hello, ack, reject and keepalive messages
	readErr  chan error                       // the error that ended reading; capacity 1
	lastRecv atomic.Int64                     // Unix nanoseconds of the last message
	active   atomic.Bool                      // set once the device is known to exist
	status   *statusSlot

	notify       chan struct{} // capacity 1; Notify and the sweep signal it
	deleted      atomic.Bool   // set by the sweep when the device no longer exists
	replaced     chan struct{} // closed when a newer stream replaces this one
	replacedOnce sync.Once

	// known is the highest version sent, acknowledged, rejected or reported by the agent. The
	// sweep reads it to find sessions that missed a notification.
	known atomic.Int64

	// Owned by the run goroutine.
	agentVersion int64     // highest version the agent reported or acknowledged
	rejected     int64     // last rejected version; never sent again
	outstanding  int64     // version sent and not yet acknowledged or rejected, or 0
	sentAt       time.Time // when outstanding was sent
}

func newSession(s *Service, device string, stream *bidiStream) *session {
	sess := &session{
		s:        s,
		device:   device,
		stream:   stream,
		inbox:    make(chan *fleetplanev1.StreamRequest, 16),
		readErr:  make(chan error, 1),
		status:   newStatusSlot(),
		notify:   make(chan struct{}, 1),
		replaced: make(chan struct{}),
	}
	sess.lastRecv.Store(time.Now().UnixNano())
	return sess
}

// signal wakes the run goroutine to read the store, without blocking.
func (sess *session) signal() {
	select {
	case sess.notify <- struct{}{}:
	default:
	}
}

func (sess *session) replace() {
	sess.replacedOnce.Do(func() { close(sess.replaced) })
}

// read receives messages until the stream fails. Status reports go to the latest-wins slot and
// everything else to the inbox, so status writes never hold up acks.
func (sess *session) read(done <-chan struct{}) {
	for {
		msg, err := sess.stream.Receive()
		if err != nil {
			sess.readErr <- err
			return
		}
		sess.lastRecv.Store(time.Now().UnixNano())
		if sess.active.Load() {
			sess.s.seen.touch(sess.device)
		}
		if status := msg.GetStatus(); status != nil {
			sess.status.put(status)
			continue
		}
		select {
		case sess.inbox <- msg:
		case <-done:
			return
		}
	}
}

// awaitHello waits for the first message, which must be a hello.
func (sess *session) awaitHello(ctx context.Context) (*fleetplanev1.AgentHello, error) {
	timer := time.NewTimer(3 * sess.s.keepalive)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-sess.readErr:
			return nil, streamEnded(err)
		case <-timer.C:
			return nil, connect.NewError(connect.CodeDeadlineExceeded,
				errors.New("no hello from the agent in time; send hello first"))
		case <-sess.status.ready:
			return nil, errNotHello
		case msg := <-sess.inbox:
			if msg.GetHello() == nil {
				return nil, errNotHello
			}
			return msg.GetHello(), nil
		}
	}
}

var errNotHello = connect.NewError(connect.CodeInvalidArgument,
	errors.New("the first stream message must be hello"))

// start checks that the device exists and loads the version it last rejected.
func (sess *session) start(ctx context.Context, hello *fleetplanev1.AgentHello) error {
	version, err := parseVersion(hello.GetRenderedVersion())
	if err != nil {
		return invalidArgument("hello.rendered_version", err.Error())
	}
	var device *fleetplanev1.Device
	err = sess.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		device, err = getDevice(ctx, tx, sess.device)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf(
			"device %s is not registered; it may have been deleted", sess.device))
	}
	if err != nil {
		return fmt.Errorf("open stream for device %s: %w", sess.device, err)
	}
	sess.agentVersion = version
	sess.rejected = rejectedVersion(device.GetStatus())
	sess.known.Store(max(version, sess.rejected))
	sess.active.Store(true)
	return nil
}

// streamEnded converts the error that ended reading into the handler's result.
func streamEnded(err error) error {
	if connect.CodeOf(err) == connect.CodeUnknown {
		return connect.NewError(connect.CodeCanceled, fmt.Errorf("stream ended: %w", err))
	}
	return err
}

// parseVersion parses a decimal rendered version; empty means 0.
func parseVersion(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("rendered version %q is not a non-negative decimal integer", v)
	}
	return n, nil
}
