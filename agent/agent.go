package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
)

// Agent is one device agent. Create it with New and start it with Run.
type Agent struct {
	cfg    Config
	timing Timing
	log    *slog.Logger
	id     *identity
	status *statusBuilder

	// servers are the agent port URLs; server indexes the one in use. Only the goroutine
	// running Run reads or changes server.
	servers       []string
	server        int
	enrollClients []fleetplanev1connect.AgentServiceClient
	streamClients []fleetplanev1connect.AgentServiceClient
	streamHTTP    *http.Transport

	enrolled  atomic.Bool
	connected atomic.Bool

	// wait sleeps for d or until ctx ends; tests replace it to observe delays.
	wait func(ctx context.Context, d time.Duration) error
	// now returns the current time; tests may replace it.
	now func() time.Time
}

// Snapshot is a point-in-time view of an agent, for progress reports.
type Snapshot struct {
	Name      string
	Enrolled  bool
	Connected bool
	// Version is the applied rendered version, empty when none.
	Version string
}

// New checks cfg and loads or creates the device identity in cfg.DataDir.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = time.Minute
	}
	if cfg.Host == nil {
		cfg.Host = &ProcHost{DiskPath: cfg.DataDir}
	}

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.CACertPEM) {
		return nil, errors.New("CA certificate is invalid: the CA file contains no PEM certificate")
	}
	id, err := loadIdentity(cfg.DataDir, cfg.Name)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:    cfg,
		timing: cfg.Timing.withDefaults(),
		log:    cfg.Logger.With("device", id.name),
		id:     id,
		status: &statusBuilder{host: cfg.Host, agentVersion: Version},
		wait:   sleep,
		now:    time.Now,
	}

	httpClient := cfg.EnrollHTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Transport: newTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})}
	}
	a.servers, _ = serverURLs(cfg.Server) // validate checked the list
	for _, u := range a.servers {
		a.enrollClients = append(a.enrollClients,
			fleetplanev1connect.NewAgentServiceClient(httpClient, u))
	}
	a.enrolled.Store(id.enrolled())
	return a, nil
}

// Name returns the device name.
func (a *Agent) Name() string {
	return a.id.name
}

// Snapshot returns the agent's current state. It is safe to call from any goroutine.
func (a *Agent) Snapshot() Snapshot {
	return Snapshot{
		Name:      a.id.name,
		Enrolled:  a.enrolled.Load(),
		Connected: a.connected.Load(),
		Version:   a.cfg.Applier.Versions().Applied,
	}
}

// Run enrolls the device if needed, finishes any interrupted apply and then keeps a stream to
// the server until ctx ends, when it returns nil. It returns an error only for a failure that
// retrying cannot fix, such as a denied enrollment or an unusable data directory.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.cfg.Applier.Recover(ctx); err != nil {
		return fmt.Errorf("recover interrupted apply: %w", err)
	}
	if err := a.enroll(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := a.setUpStreamClient(); err != nil {
		return err
	}
	defer a.streamHTTP.CloseIdleConnections()
	a.streamLoop(ctx)
	return nil
}

// setUpStreamClient makes the mutual TLS client that carries the stream. It trusts the CA
// file and the CA certificate received at enrollment.
func (a *Agent) setUpStreamClient() error {
	cert, err := a.id.tlsCertificate()
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.cfg.CACertPEM)
	pool.AppendCertsFromPEM(a.id.caPEM)
	// NOTE: each agent has its own transport, because a connection carries one client
	// certificate; agents in one process share only the enrollment client.
	a.streamHTTP = newTransport(&tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	})
	for _, u := range a.servers {
		a.streamClients = append(a.streamClients, fleetplanev1connect.NewAgentServiceClient(
			&http.Client{Transport: a.streamHTTP}, u))
	}
	return nil
}

// nextServer moves to the next server URL after a failure, when there are several.
func (a *Agent) nextServer(ctx context.Context) {
	if len(a.servers) < 2 {
		return
	}
	a.server = (a.server + 1) % len(a.servers)
	a.log.InfoContext(ctx, "switching to the next server", "server", a.servers[a.server])
}

// newTransport returns an HTTP transport that speaks HTTP/2 over TLS, which bidirectional
// streams need.
func newTransport(tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:     tlsConfig,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
	}
}

// streamLoop opens streams one after another, waiting with backoff between them.
func (a *Agent) streamLoop(ctx context.Context) {
	b := newBackoff(a.timing.ReconnectMinDelay, a.timing.ReconnectMaxDelay)
	failures := 0
	for {
		started := a.now()
		established, err := a.runStream(ctx)
		a.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if established && a.now().Sub(started) >= a.timing.StableAfter {
			b.reset()
			failures = 0
		}
		failures++

		var delay time.Duration
		if isRejection(err) {
			delay = b.maxDelay()
			a.log.ErrorContext(ctx, "stream rejected by the server; retrying at the maximum delay",
				"code", connect.CodeOf(err).String(), "err", err, "retry_in", delay, "failures", failures)
		} else {
			delay = b.next()
			a.log.WarnContext(ctx, "stream ended; reconnecting",
				"err", err, "retry_in", delay, "failures", failures)
		}
		// Any replica serves any device, so the next attempt goes to the next URL: a dead
		// replica then costs one backoff delay.
		a.nextServer(ctx)
		if a.wait(ctx, delay) != nil {
			return
		}
	}
}

// isRejection reports whether err means that the server rejects this device, because the
// device was deleted or its certificate is not accepted. A quick retry cannot succeed then.
func isRejection(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return true
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
