package agent

import (
	"net"
	"testing"

	"github.com/fleetplane/fleetplane/agent/agenttest"
)

// closedURL returns an https URL on a loopback port that nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "https://" + addr
}

func TestAgentFailoverToNextServer(t *testing.T) {
	f := agenttest.New(t)
	dead := closedURL(t)
	ta := startTestAgent(t, f, func(c *Config) { c.Server = dead + "," + f.URL() })

	// Enrollment fails on the dead URL first, so the agent has to move on to enroll at all.
	s := f.NextStream(t)
	if s.Device != ta.Name() {
		t.Errorf("stream device = %q, want %q", s.Device, ta.Name())
	}
	s.SendSpec(t, specWithFile("4", "/v", "four"))
	if got := s.Next(t, agenttest.IsAnswer).GetAck().GetRenderedVersion(); got != "4" {
		t.Fatalf("ack version = %q, want 4", got)
	}

	// After the server stops, the agent alternates between both URLs until one accepts a stream.
	addr := f.Addr
	f.Stop()
	f.Start(addr)
	s = f.NextStream(t)
	if got := s.Hello.GetRenderedVersion(); got != "4" {
		t.Errorf("hello version after failover = %q, want 4", got)
	}
}

func TestConfigRejectsBadServerList(t *testing.T) {
	cases := []string{"", "https://a:1,", "https://a:1,http://b:2", "https://a:1, ftp://c"}
	for _, list := range cases {
		if _, err := serverURLs(list); err == nil {
			t.Errorf("serverURLs(%q) = nil error, want an invalid URL error", list)
		}
	}
	got, err := serverURLs("https://a:1, https://b:2")
	if err != nil {
		t.Fatalf("serverURLs: %v", err)
	}
	if len(got) != 2 || got[1] != "https://b:2" {
		t.Errorf("serverURLs = %q, want two trimmed URLs", got)
	}
}
