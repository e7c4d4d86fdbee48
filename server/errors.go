package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/fleetplane/fleetplane/server/internal/validation"
	"github.com/fleetplane/fleetplane/store"
)

// Messages for errors whose store text is not shown to clients.
const (
	msgConflict = "the object was modified since it was read; get it again and reapply"
	msgInternal = "internal error; the server logged the details"
)

// toConnectError maps an error from a handler to the error sent to the client. Connect errors
// pass through. Internal errors are logged with the procedure name, and the client gets only a
// generic message.
func (s *Server) toConnectError(ctx context.Context, procedure string, err error) error {
	var connectErr *connect.Error
	var fieldErr *validation.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &connectErr):
		return connectErr
	case errors.As(err, &fieldErr):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAborted, errors.New(msgConflict))
	case errors.Is(err, store.ErrInvalidArgument):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request deadline exceeded"))
	}
	s.log.LogAttrs(ctx, slog.LevelError, "request failed",
		slog.String("procedure", procedure), slog.Any("err", err))
	return connect.NewError(connect.CodeInternal, errors.New(msgInternal))
}

// invalidArgument returns an INVALID_ARGUMENT error naming field.
func invalidArgument(field, message string) error {
	return &validation.FieldError{Field: field, Message: message}
}

// failedPrecondition returns a FAILED_PRECONDITION error with message.
func failedPrecondition(message string) error {
	return connect.NewError(connect.CodeFailedPrecondition, errors.New(message))
}

// errorInterceptor maps every handler error through toConnectError.
type errorInterceptor struct{ s *Server }

func (i errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			return nil, i.s.toConnectError(ctx, req.Spec().Procedure, err)
		}
		return resp, nil
	}
}

func (i errorInterceptor) WrapStreamingClient(
	next connect.StreamingClientFunc,
) connect.StreamingClientFunc {
	return next
}

func (i errorInterceptor) WrapStreamingHandler(
	next connect.StreamingHandlerFunc,
) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return i.s.toConnectError(ctx, conn.Spec().Procedure, next(ctx, conn))
	}
}

// logInterceptor logs each request at debug level: procedure, protocol, code and duration.
// It never logs request or response bodies.
type logInterceptor struct{ log *slog.Logger }

func (i logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		i.logDone(ctx, req.Spec().Procedure, req.Peer().Protocol, start, err)
		return resp, err
	}
}

func (i logInterceptor) WrapStreamingClient(
	next connect.StreamingClientFunc,
) connect.StreamingClientFunc {
	return next
}

func (i logInterceptor) WrapStreamingHandler(
	next connect.StreamingHandlerFunc,
) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.logDone(ctx, conn.Spec().Procedure, conn.Peer().Protocol, start, err)
		return err
	}
}

func (i logInterceptor) logDone(
	ctx context.Context,
	procedure,
	protocol string,
	start time.Time,
	err error,
) {
	if !i.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	i.log.LogAttrs(ctx, slog.LevelDebug, "request",
		slog.String("procedure", procedure), slog.String("protocol", protocol),
		slog.String("code", code), slog.Duration("duration", time.Since(start)))
}
