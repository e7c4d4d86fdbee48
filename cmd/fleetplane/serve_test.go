package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that a running command and the test may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var startedAddr = regexp.MustCompile(`msg="server started" addr=(\S+)`)

func TestServeStartsAndStops(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0",
			"--agent-listen", "127.0.0.1:0"},
			nil, &stdout, &stderr, func(string) string { return "" })
	}()

	var addr string
	deadline := time.Now().Add(15 * time.Second)
	for addr == "" {
		if m := startedAddr.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case code := <-exit:
			t.Fatalf("serve exited with %d before it started:\n%s", code, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not log its address within 15s:\n%s", stderr.String())
		}
	}

	r := runCLI(t, "http://"+addr, "", "get", "devices")
	if r.code != 0 || !strings.Contains(r.stderr, "no devices found") {
		t.Errorf("get devices from serve: exit %d, stderr %q", r.code, r.stderr)
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("serve exit code = %d, want 0:\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop within 15s of cancellation")
	}
}

func TestDefaultDataDir(t *testing.T) {
	env := map[string]string{"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}
	getenv := func(k string) string { return env[k] }
	if got, _ := defaultDataDir(getenv); got != "/xdg/fleetplane" {
		t.Errorf("with XDG_DATA_HOME: %q, want /xdg/fleetplane", got)
	}
	delete(env, "XDG_DATA_HOME")
	if got, _ := defaultDataDir(getenv); got != "/home/u/.local/share/fleetplane" {
		t.Errorf("with HOME only: %q, want /home/u/.local/share/fleetplane", got)
	}
}

func TestServerFlagDefault(t *testing.T) {
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string {
		if k == "FLEETPLANE_SERVER" {
			return "http://127.0.0.1:1"
		}
		return ""
	}
	code := run(context.Background(), []string{"get", "fleets"}, nil, &stdout, &stderr, getenv)
	if code != 1 || !strings.Contains(stderr.String(), "at http://127.0.0.1:1:") {
		t.Errorf("exit %d, stderr %q; want the FLEETPLANE_SERVER URL", code, stderr.String())
	}
}
