package agentapi

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
)

// BenchmarkStreams measures memory and goroutines per open agent stream.
// FLEETPLANE_BENCH_STREAMS sets how many streams are open at once (default 100). The figures
// include the in-process test clients, one HTTP/2 connection per device, so the server's own
// share is lower.
func BenchmarkStreams(b *testing.B) {
	n := 100
	if v := os.Getenv("FLEETPLANE_BENCH_STREAMS"); v != "" {
		parsed, err := strconv.Atoi(v)
		if err != nil || parsed < 1 {
			b.Fatalf("FLEETPLANE_BENCH_STREAMS=%q: want a positive integer", v)
		}
		n = parsed
	}
	e := newEnv(b, func(c *Config) {
		// Every iteration opens n streams at once, so admission must not limit them.
		c.AdmitRate, c.AdmitBurst = 1e9, 1<<30
		c.Logger = slog.New(slog.DiscardHandler)
	})
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%05d", i)
		e.createDevice(names[i])
	}

	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		clients := make([]fleetplanev1connect.AgentServiceClient, n)
		for i, name := range names {
			clients[i] = e.agentClient(e.deviceCert(name))
		}
		before := memoryInUse()
		goroutines := runtime.NumGoroutine()
		b.StartTimer()

		agents := make([]*testAgent, n)
		for i, client := range clients {
			agents[i] = e.connectWith(client, "")
		}
		waitFor(b, "all streams registered", func() bool { return e.svc.Connected() == n })

		b.StopTimer()
		after := memoryInUse()
		b.ReportMetric(float64(after-before)/float64(n), "bytes/stream")
		b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/float64(n), "goroutines/stream")
		for _, a := range agents {
			a.close()
		}
		waitFor(b, "all streams closed", func() bool { return e.svc.Connected() == 0 })
		b.StartTimer()
	}
}

// memoryInUse returns live heap bytes plus goroutine stack bytes after a garbage collection.
func memoryInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}
