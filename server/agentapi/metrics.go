package agentapi

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

const meterName = "github.com/fleetplane/fleetplane/server/agentapi"

// metrics are the agent port's instruments on the global MeterProvider. None has a per-device
// attribute.
type metrics struct {
	renderToAckSeconds metric.Float64Histogram
	rejectedVersions   metric.Int64Counter
	streamsRejected    metric.Int64Counter
	registration       metric.Registration
}

func newMetrics(connected func() int) (*metrics, error) {
	meter := otel.Meter(meterName)
	m := &metrics{}
	var err error
	m.renderToAckSeconds, err = meter.Float64Histogram("fleetplane_agent_render_to_ack_seconds",
		metric.WithUnit("s"),
		metric.WithDescription("Time from sending a rendered spec on a stream to its acknowledgement."))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	m.rejectedVersions, err = meter.Int64Counter("fleetplane_agent_rejected_versions_total",
		metric.WithDescription("Rendered versions that agents rejected."))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	m.streamsRejected, err = meter.Int64Counter("fleetplane_agent_streams_rejected_total",
		metric.WithDescription("Agent streams rejected before they were established, by reason."))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	gauge, err := meter.Int64ObservableGauge("fleetplane_agents_connected",
		metric.WithDescription("Agent streams open on this replica."))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	m.registration, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(gauge, int64(connected()))
		return nil
	}, gauge)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return m, nil
}

func (m *metrics) renderToAck(ctx context.Context, d time.Duration) {
	m.renderToAckSeconds.Record(ctx, d.Seconds())
}

func (m *metrics) versionRejected(ctx context.Context) {
	m.rejectedVersions.Add(ctx, 1)
}

func (m *metrics) streamRejected(ctx context.Context, reason string) {
	m.streamsRejected.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

func (m *metrics) close() {
	m.registration.Unregister()
}
