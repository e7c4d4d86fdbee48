package server

import (
	"context"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// instrumentationName names the tracer and meter of the API server.
const instrumentationName = "github.com/fleetplane/fleetplane/server"

// telemetryInterceptor records a server span and the rpc.server.duration histogram for each
// RPC. Attributes are the RPC system, service, method and status code only, so the metric's
// cardinality does not grow with clients or objects.
//
// NOTE: this replaces connectrpc.com/otelconnect, whose version in go.mod (v0.11) is built on
// connect-go v2, while the generated handlers use connect-go v1. Versions built on v1 (v0.10)
// cannot be selected without downgrading the buf tool that go.mod also pins.
type telemetryInterceptor struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	duration   metric.Float64Histogram
}

func newTelemetryInterceptor(meters metric.MeterProvider) (*telemetryInterceptor, error) {
	duration, err := meters.Meter(instrumentationName).Float64Histogram("rpc.server.duration",
		metric.WithUnit("ms"), metric.WithDescription("Duration of RPCs handled by the server."))
	if err != nil {
		return nil, err
	}
	return &telemetryInterceptor{
		tracer:     otel.GetTracerProvider().Tracer(instrumentationName),
		propagator: otel.GetTextMapPropagator(),
		duration:   duration,
	}, nil
}

func (t *telemetryInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, finish := t.start(ctx, req.Spec(), req.Peer(), req.Header())
		resp, err := next(ctx, req)
		finish(err)
		return resp, err
	}
}

func (t *telemetryInterceptor) WrapStreamingClient(
	next connect.StreamingClientFunc,
) connect.StreamingClientFunc {
	return next
}

func (t *telemetryInterceptor) WrapStreamingHandler(
	next connect.StreamingHandlerFunc,
) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, finish := t.start(ctx, conn.Spec(), conn.Peer(), conn.RequestHeader())
		err := next(ctx, conn)
		finish(err)
		return err
	}
}

// start opens the RPC's span and returns a function that ends it and records the duration.
func (t *telemetryInterceptor) start(
	ctx context.Context,
	spec connect.Spec,
	peer connect.Peer,
	header map[string][]string,
) (context.Context, func(error)) {
	begin := time.Now()
	service, method, _ := strings.Cut(strings.TrimPrefix(spec.Procedure, "/"), "/")
	attrs := []attribute.KeyValue{
		attribute.String("rpc.system", rpcSystem(peer.Protocol)),
		attribute.String("rpc.service", service),
		attribute.String("rpc.method", method),
	}
	ctx = t.propagator.Extract(ctx, propagation.HeaderCarrier(header))
	ctx, span := t.tracer.Start(ctx, service+"/"+method,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	return ctx, func(err error) {
		code := "ok"
		if err != nil {
			code = connect.CodeOf(err).String()
			span.SetStatus(codes.Error, code)
		}
		span.SetAttributes(attribute.String("rpc.connect_rpc.error_code", code))
		span.End()
		attrs = append(attrs, attribute.String("rpc.connect_rpc.error_code", code))
		elapsed := float64(time.Since(begin)) / float64(time.Millisecond)
		t.duration.Record(context.WithoutCancel(ctx), elapsed, metric.WithAttributes(attrs...))
	}
}

func rpcSystem(protocol string) string {
	switch protocol {
	case connect.ProtocolGRPC, connect.ProtocolGRPCWeb:
		return "grpc"
	}
	return "connect_rpc"
}
