package agentapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/store"
)

// msgInternal is the only text an agent gets for a server-side failure.
const msgInternal = "internal error; the server logged the details"

// toConnectError maps a handler error to the error sent to the agent. Connect errors pass
// through. Other errors that the agent did not cause are logged, and the agent gets only
// msgInternal.
func (s *Service) toConnectError(ctx context.Context, procedure string, err error) error {
	var connectErr *connect.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &connectErr):
		return connectErr
	case errors.Is(err, identity.ErrInvalidCSR), errors.Is(err, store.ErrInvalidArgument):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAborted,
			errors.New("the device was modified since it was read; get it again and retry"))
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request deadline exceeded"))
	}
	s.log.LogAttrs(ctx, slog.LevelError, "agent request failed",
		slog.String("procedure", procedure), slog.Any("err", err))
	return connect.NewError(connect.CodeInternal, errors.New(msgInternal))
}

func invalidArgument(field, message string) error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(field+": "+message))
}

// errorInterceptor maps every unary and stream handler error through toConnectError.
type errorInterceptor struct{ s *Service }

func (i errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			return nil, i.s.toConnectError(ctx, req.Spec().Procedure, err)
		}
		return resp, nil
	}
}

func (i errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return i.s.toConnectError(ctx, conn.Spec().Procedure, next(ctx, conn))
	}
}

// recoverPanic logs a handler panic; the agent gets INTERNAL.
func (s *Service) recoverPanic(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.log.LogAttrs(ctx, slog.LevelError, "agent handler panicked",
		slog.String("procedure", spec.Procedure), slog.Any("panic", p))
	return connect.NewError(connect.CodeInternal, errors.New(msgInternal))
}
