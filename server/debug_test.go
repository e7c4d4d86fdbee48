package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func TestServeDebugServesProfilesOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveDebug(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	resp, err := http.Get(base + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Errorf("GET /debug/pprof/ = %d, body without the goroutine profile:\n%s", resp.StatusCode, body)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the debug port = %d, want 404", resp.StatusCode)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveDebug after cancel: %v", err)
	}
}

// lockedBuffer is a bytes.Buffer that a server goroutine writes while a test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRequestLogShowsMappedCode(t *testing.T) {
	logs := &lockedBuffer{}
	ts := startServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	_, err := ts.devices().CreateDevice(context.Background(), connect.NewRequest(
		&fleetplanev1.CreateDeviceRequest{Device: &fleetplanev1.Device{}}))
	wantCode(t, err, connect.CodeInvalidArgument)
	if !strings.Contains(logs.String(), "code=invalid_argument") {
		t.Errorf("request log has no code=invalid_argument line:\n%s", logs.String())
	}
}
