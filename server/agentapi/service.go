package agentapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/store"
)

// Defaults for the zero fields of Config.
const (
	DefaultKeepaliveInterval = 15 * time.Second
	DefaultSweepInterval     = 30 * time.Second
	DefaultLastSeenFlush     = 5 * time.Second
	DefaultAdmitRate         = 200
)

// maxRequestBytes is the largest message the agent port reads.
const maxRequestBytes = 4 << 20

// Config configures New.
type Config struct {
	Store store.Store
	// CA supplies the agent port's TLS configuration and the CA certificate returned with
	// approved enrollments.
	CA     *identity.CA
	Logger *slog.Logger
	// KeepaliveInterval is how often each side sends a keepalive. The server closes a stream
	// that brought no message for three intervals.
	KeepaliveInterval time.Duration
	// SweepInterval is how often connected devices are checked for rendered versions that
	// their streams have not sent.
	SweepInterval time.Duration
	// LastSeenFlush is how often last-seen times are written to the store.
	LastSeenFlush time.Duration
	// AdmitRate is how many new streams per second are admitted, and AdmitBurst how many may
	// arrive at once. A stream over the limit gets UNAVAILABLE. AdmitBurst defaults to
	// AdmitRate rounded up.
	AdmitRate  float64
	AdmitBurst int
	// SessionReplica, when set, is this server's replica id, under which the streams it holds
	// are written to the store's session registry in batches, every LastSeenFlush. Replicas
	// that share a database read the registry to tell the right replica to push.
	SessionReplica string
}

// Service serves the agent port: AgentService and a DeviceService restricted to the caller's
// own device.
type Service struct {
	store     store.Store
	ca        *identity.CA
	log       *slog.Logger
	keepalive time.Duration
	sweep     time.Duration
	flush     time.Duration
	admit     *tokenBucket
	seen      *lastSeen
	metrics   *metrics
	// replica is Config.SessionReplica; streams go to the session registry only when it is set.
	replica string
	sessLog *sessionLog

	mu       sync.Mutex
	sessions map[string]*session // by device; guarded by mu

	// beforeStatusWrite, when set by tests, runs before each status report is written.
	beforeStatusWrite func(device string)
}

// New returns a Service for cfg.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("new agent service: Config.Store is nil")
	}
	if cfg.CA == nil {
		return nil, errors.New("new agent service: Config.CA is nil")
	}
	if cfg.KeepaliveInterval < 0 || cfg.SweepInterval < 0 || cfg.LastSeenFlush < 0 ||
		cfg.AdmitRate < 0 || cfg.AdmitBurst < 0 {
		return nil, errors.New("new agent service: intervals and admission limits must not be negative")
	}
	s := &Service{
		store:     cfg.Store,
		ca:        cfg.CA,
		log:       cfg.Logger,
		keepalive: orDefault(cfg.KeepaliveInterval, DefaultKeepaliveInterval),
		sweep:     orDefault(cfg.SweepInterval, DefaultSweepInterval),
		flush:     orDefault(cfg.LastSeenFlush, DefaultLastSeenFlush),
		seen:      newLastSeen(),
		replica:   cfg.SessionReplica,
		sessLog:   &sessionLog{pending: map[string]bool{}},
		sessions:  map[string]*session{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	rate := orDefault(cfg.AdmitRate, DefaultAdmitRate)
	burst := cfg.AdmitBurst
	if burst == 0 {
		burst = int(rate + 0.999)
	}
	s.admit = newTokenBucket(rate, burst, time.Now())
	m, err := newMetrics(s.Connected)
	if err != nil {
		return nil, fmt.Errorf("new agent service: %w", err)
	}
	s.metrics = m
	return s, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Handler returns the agent port's HTTP handler. It must be served over TLS with the
// configuration from CA.ServerTLSConfig, so that client certificates are verified.
func (s *Service) Handler() http.Handler {
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(maxRequestBytes),
		connect.WithInterceptors(errorInterceptor{s: s}),
		connect.WithRecover(s.recoverPanic),
	}
	mux := http.NewServeMux()
	mux.Handle(fleetplanev1connect.NewAgentServiceHandler(&agentService{s: s}, opts...))
	mux.Handle(fleetplanev1connect.NewDeviceServiceHandler(&deviceService{s: s}, opts...))
	return identity.WithDevice(mux)
}

// Run flushes last-seen times and sweeps connected devices for missed notifications until ctx
// ends, then flushes once more.
func (s *Service) Run(ctx context.Context) error {
	defer s.metrics.close()
	if s.replica != "" {
		// Entries left by an earlier process with this id name streams that no longer exist.
		s.clearSessions(ctx)
		defer func() {
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			s.clearSessions(final)
		}()
	}
	flush := time.NewTicker(s.flush)
	defer flush.Stop()
	sweep := time.NewTicker(s.sweep)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			s.flushLastSeen(final)
			return nil
		case <-flush.C:
			s.flushLastSeen(ctx)
			s.flushSessions(ctx)
		case <-sweep.C:
			s.sweepSessions(ctx)
		}
	}
}

// Notify signals the stream of device, if this process holds one, to send the device's latest
// rendered spec when the protocol allows. It never blocks.
func (s *Service) Notify(device string) {
	s.mu.Lock()
	sess := s.sessions[device]
	s.mu.Unlock()
	if sess != nil {
		sess.signal()
	}
}

// Connected returns the number of open agent streams.
func (s *Service) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// ListenAndServeTLS serves Handler on addr with a server certificate for hosts until ctx ends,
// and runs Run alongside.
func (s *Service) ListenAndServeTLS(ctx context.Context, addr string, hosts []string) error {
	tlsConfig, err := s.ca.ServerTLSConfig(hosts)
	if err != nil {
		return fmt.Errorf("agent port: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("agent port: %w", err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		s.Run(ctx)
	}()
	go func() {
		<-ctx.Done()
		shutdown, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer done()
		srv.Shutdown(shutdown)
		srv.Close()
	}()
	s.log.InfoContext(ctx, "agent port listening", "addr", ln.Addr().String())
	err = srv.ServeTLS(ln, "", "")
	cancel()
	<-runDone
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("agent port: %w", err)
}
