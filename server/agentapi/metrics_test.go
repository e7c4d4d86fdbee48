package agentapi

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func TestMetricsRecorded(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	previous := otel.GetMeterProvider()
	otel.SetMeterProvider(provider)
	t.Cleanup(func() {
		otel.SetMeterProvider(previous)
		provider.Shutdown(context.Background())
	})

	e := newEnv(t, func(c *Config) { c.AdmitRate, c.AdmitBurst = 0.001, 2 })
	e.createDevice("d1")
	e.render("d1", "one")
	e.render("d1", "two")
	a := e.connect("d1", "1")
	a.expectSpec("2")
	a.reject("2", "bad")
	waitFor(t, "reject recorded", func() bool { return rejectedVersion(e.device("d1").GetStatus()) == 2 })
	v3 := e.render("d1", "three")
	e.svc.Notify("d1")
	a.expectSpec(v3)
	a.ack(v3)
	e.waitDevice("d1", "ack recorded", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetConfig().GetRenderedVersion() == v3
	})
	if code := e.connectWith(e.agentClient(), "").expectEnd().Code(); code != connect.CodeUnauthenticated {
		t.Fatalf("stream without a certificate ended with %v", code)
	}

	var data metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &data); err != nil {
		t.Fatal(err)
	}
	got := map[string]metricdata.Aggregation{}
	for _, scope := range data.ScopeMetrics {
		for _, m := range scope.Metrics {
			got[m.Name] = m.Data
		}
	}
	if g, ok := got["fleetplane_agents_connected"].(metricdata.Gauge[int64]); !ok ||
		len(g.DataPoints) != 1 || g.DataPoints[0].Value != 1 {
		t.Errorf("fleetplane_agents_connected = %v, want one point of 1", got["fleetplane_agents_connected"])
	}
	if s, ok := got["fleetplane_agent_rejected_versions_total"].(metricdata.Sum[int64]); !ok ||
		len(s.DataPoints) != 1 || s.DataPoints[0].Value != 1 {
		t.Errorf("rejected versions = %v, want 1", got["fleetplane_agent_rejected_versions_total"])
	}
	if h, ok := got["fleetplane_agent_render_to_ack_seconds"].(metricdata.Histogram[float64]); !ok ||
		len(h.DataPoints) != 1 || h.DataPoints[0].Count != 1 {
		t.Errorf("render-to-ack histogram = %v, want one observation", got["fleetplane_agent_render_to_ack_seconds"])
	}
	s, ok := got["fleetplane_agent_streams_rejected_total"].(metricdata.Sum[int64])
	if !ok || len(s.DataPoints) != 1 {
		t.Fatalf("streams rejected = %v, want one reason", got["fleetplane_agent_streams_rejected_total"])
	}
	if reason, _ := s.DataPoints[0].Attributes.Value("reason"); reason.AsString() != rejectUnauthenticated {
		t.Errorf("streams rejected reason = %q, want %q", reason.AsString(), rejectUnauthenticated)
	}
}
