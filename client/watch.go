package client

import (
	"io"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

// WatchEvent is one change that a Watch stream reports.
type WatchEvent struct {
	Type fleetplanev1.WatchEventType
	// Object is nil for bookmarks.
	Object          proto.Message
	ResourceVersion string
}

// Watcher reads a Watch stream. It is not safe for concurrent use.
type Watcher struct {
	next  func() (WatchEvent, bool)
	err   func() error
	close func() error
}

// Next blocks until the next event arrives. It returns io.EOF when the server ends the stream,
// and the stream's error when it fails.
func (w *Watcher) Next() (WatchEvent, error) {
	if ev, ok := w.next(); ok {
		return ev, nil
	}
	if err := w.err(); err != nil {
		return WatchEvent{}, err
	}
	return WatchEvent{}, io.EOF
}

// Close ends the stream.
func (w *Watcher) Close() error { return w.close() }

func newRequest[T any](msg *T) *connect.Request[T] { return connect.NewRequest(msg) }

// newWatcher wraps a typed server stream; convert turns each response into a WatchEvent.
func newWatcher[Resp any](s *connect.ServerStreamForClient[Resp], err error,
	convert func(*Resp) WatchEvent) (*Watcher, error) {
	if err != nil {
		return nil, err
	}
	return &Watcher{
		next: func() (WatchEvent, bool) {
			if !s.Receive() {
				return WatchEvent{}, false
			}
			ev := convert(s.Msg())
			if ev.Object != nil && !ev.Object.ProtoReflect().IsValid() {
				ev.Object = nil // bookmarks carry a typed nil pointer
			}
			return ev, true
		},
		err:   s.Err,
		close: s.Close,
	}, nil
}
