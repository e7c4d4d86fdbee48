package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fleetplane/fleetplane/agent/apply"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// CapabilityVersion is the protocol level this agent sends in its hello.
const CapabilityVersion = 1

// Version is the agent version reported in hello and system info; release builds set it
// with -ldflags "-X github.com/fleetplane/fleetplane/agent.Version=...".
var Version = "dev"

// Applier applies rendered specs on the device. apply.Manager writes files; apply.Memory keeps
// specs in memory for simulated devices.
type Applier interface {
	// Recover finishes or undoes an apply that a previous process did not complete.
	Recover(ctx context.Context) error
	// Apply applies spec, or rolls it back and records it as rejected.
	Apply(ctx context.Context, spec *fleetplanev1.RenderedDeviceSpec) error
	// Versions returns the applied and rejected versions.
	Versions() apply.Versions
}

// Config configures an Agent. Server, CACertPEM and Applier are required.
type Config struct {
	// Server is the base URL of the agent port, for example https://127.0.0.1:7443, or the
	// comma-separated URLs of several server replicas. The agent starts with the first and
	// moves to the next one after each failed enrollment call or stream.
	Server string
	// CACertPEM holds the PEM certificates that the server's TLS certificate must chain to.
	CACertPEM []byte
	// DataDir keeps the key, name and certificate; empty keeps them in memory only.
	DataDir string
	// Name is the device name; empty derives one from the public key.
	Name string
	// Labels are sent with the enrollment request.
	Labels map[string]string
	// StatusInterval is the time between periodic status reports; 0 means 60 s.
	StatusInterval time.Duration
	Applier        Applier
	// Host reads system facts; nil reads /proc and the file system of DataDir.
	Host   Host
	Logger *slog.Logger
	// EnrollHTTPClient makes the Enroll and GetEnrollmentCertificate calls, which carry no
	// client certificate, so agents in one process may share it. Nil makes one from CACertPEM.
	EnrollHTTPClient *http.Client
	// OnEnrollPending, when set, is called while the enrollment request is pending until it
	// returns nil, for example to approve the request in a test or simulation.
	OnEnrollPending func(ctx context.Context, name string, labels map[string]string) error
	// Timing overrides protocol timings; zero fields take their defaults.
	Timing Timing
}

// Timing holds the agent's delays. The defaults are those of the agent protocol.
type Timing struct {
	EnrollMinDelay    time.Duration // default 1 s
	EnrollMaxDelay    time.Duration // default 30 s
	ReconnectMinDelay time.Duration // default 1 s
	ReconnectMaxDelay time.Duration // default 60 s
	// StableAfter is how long a stream must stay up to reset the reconnect backoff.
	StableAfter time.Duration // default 1 min
	Keepalive   time.Duration // default 15 s
	// DeadAfter is how long a stream may bring no message before the agent drops it.
	DeadAfter time.Duration // default 45 s
}

func (t Timing) withDefaults() Timing {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&t.EnrollMinDelay, time.Second)
	set(&t.EnrollMaxDelay, 30*time.Second)
	set(&t.ReconnectMinDelay, time.Second)
	set(&t.ReconnectMaxDelay, 60*time.Second)
	set(&t.StableAfter, time.Minute)
	set(&t.Keepalive, 15*time.Second)
	set(&t.DeadAfter, 45*time.Second)
	return t
}

func (c *Config) validate() error {
	if _, err := serverURLs(c.Server); err != nil {
		return err
	}
	if len(c.CACertPEM) == 0 {
		return errors.New("CA certificate is missing: give the file with the server's CA (--ca-file)")
	}
	if c.Applier == nil {
		return errors.New("applier is missing")
	}
	if c.StatusInterval < 0 {
		return fmt.Errorf("status interval %v is negative", c.StatusInterval)
	}
	return nil
}

// serverURLs splits a comma-separated list of server URLs and checks each one.
func serverURLs(list string) ([]string, error) {
	var urls []string
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("server URL %q is invalid: use https://HOST:PORT, "+
				"or several such URLs separated by commas", raw)
		}
		urls = append(urls, raw)
	}
	return urls, nil
}
