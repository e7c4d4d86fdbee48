// Package simulate runs many device agents in one process, for load tests and benchmarks.
//
// Each simulated device has its own key, name and client certificate, kept in memory, and
// applies specs with apply.Memory, so it writes no files. The agents share one HTTP client for
// enrollment calls; each stream needs its own TLS connection, because the connection carries
// the device's client certificate. With an approve URL the simulator approves its own
// enrollment requests through the operator API, so a load test needs no operator.
package simulate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/agent"
	"github.com/fleetplane/fleetplane/agent/apply"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
)

// Options configures a Simulator. Count, Server and CACertPEM are required.
type Options struct {
	// Count is the number of simulated devices.
	Count int
	// Server is the base URL of the agent port, for example https://127.0.0.1:7443.
	Server string
	// CACertPEM holds the PEM certificates that the server's TLS certificate must chain to.
	CACertPEM []byte
	// ApproveURL is the base URL of the operator API; empty leaves approval to someone else.
	ApproveURL string
	// ApproveToken, when set, is sent as a bearer token with approval calls.
	ApproveToken string
	// Labels are sent with each enrollment request and set on approval.
	Labels map[string]string
	// NamePrefix, when set, names the devices PREFIX00000, PREFIX00001 and so on; empty derives
	// each name from the device's key.
	NamePrefix string
	// StartInterval is the pause between starting two agents; 0 starts them all at once.
	StartInterval time.Duration
	// StatusInterval is the time between periodic status reports; 0 means 60 s.
	StatusInterval time.Duration
	// Timing overrides the agents' protocol timings.
	Timing agent.Timing
	Logger *slog.Logger
}

// Simulator runs a set of simulated agents.
type Simulator struct {
	opts   Options
	agents []*agent.Agent
}

// Progress counts the simulated agents in each state.
type Progress struct {
	Total     int
	Enrolled  int
	Connected int
	// Versions maps each applied rendered version to the number of agents at it; agents that
	// applied none are counted under "".
	Versions map[string]int
}

// String returns a one-line summary such as
// "enrolled 10/10, connected 9/10, at version 3: 9, none: 1".
func (p Progress) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "enrolled %d/%d, connected %d/%d", p.Enrolled, p.Total, p.Connected, p.Total)
	versions := slices.SortedFunc(maps.Keys(p.Versions), func(x, y string) int {
		return apply.CompareVersions(y, x)
	})
	for _, v := range versions {
		if v == "" {
			fmt.Fprintf(&b, ", none: %d", p.Versions[v])
		} else {
			fmt.Fprintf(&b, ", at version %s: %d", v, p.Versions[v])
		}
	}
	return b.String()
}

// New creates the simulated agents and their identities.
func New(opts Options) (*Simulator, error) {
	if opts.Count <= 0 {
		return nil, fmt.Errorf("count %d is invalid: give a positive number of devices", opts.Count)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(opts.CACertPEM) {
		return nil, errors.New("CA certificate is invalid: the CA file contains no PEM certificate")
	}
	enrollHTTP := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
	}}
	approve := newApprover(opts, enrollHTTP)

	s := &Simulator{opts: opts, agents: make([]*agent.Agent, 0, opts.Count)}
	for i := range opts.Count {
		cfg := agent.Config{
			Server:           opts.Server,
			CACertPEM:        opts.CACertPEM,
			Labels:           opts.Labels,
			StatusInterval:   opts.StatusInterval,
			Applier:          &apply.Memory{},
			Logger:           opts.Logger,
			EnrollHTTPClient: enrollHTTP,
			OnEnrollPending:  approve,
			Timing:           opts.Timing,
		}
		if opts.NamePrefix != "" {
			cfg.Name = fmt.Sprintf("%s%05d", opts.NamePrefix, i)
		}
		host := &simHost{}
		cfg.Host = host
		a, err := agent.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("simulated device %d: %w", i, err)
		}
		host.name = a.Name()
		s.agents = append(s.agents, a)
	}
	return s, nil
}

// Run runs every agent until ctx ends, starting them StartInterval apart. It returns the
// errors of agents that stopped early, such as denied enrollments, joined.
func (s *Simulator) Run(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, a := range s.agents {
		if i > 0 && s.opts.StartInterval > 0 {
			t := time.NewTimer(s.opts.StartInterval)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("device %s: %w", a.Name(), err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Progress returns the current counts. It is safe to call while Run runs.
func (s *Simulator) Progress() Progress {
	p := Progress{Total: len(s.agents), Versions: map[string]int{}}
	for _, a := range s.agents {
		snap := a.Snapshot()
		if snap.Enrolled {
			p.Enrolled++
		}
		if snap.Connected {
			p.Connected++
		}
		p.Versions[snap.Version]++
	}
	return p
}

// Names returns the device names in start order.
func (s *Simulator) Names() []string {
	names := make([]string, len(s.agents))
	for i, a := range s.agents {
		names[i] = a.Name()
	}
	return names
}

// newApprover returns the hook that approves a pending enrollment request through the
// operator API, or nil without an approve URL.
func newApprover(opts Options, httpClient *http.Client) func(context.Context, string, map[string]string) error {
	if opts.ApproveURL == "" {
		return nil
	}
	var clientOpts []connect.ClientOption
	if opts.ApproveToken != "" {
		clientOpts = append(clientOpts, connect.WithInterceptors(bearerToken(opts.ApproveToken)))
	}
	client := fleetplanev1connect.NewEnrollmentRequestServiceClient(
		httpClient, opts.ApproveURL, clientOpts...)
	return func(ctx context.Context, name string, labels map[string]string) error {
		_, err := client.ApproveEnrollmentRequest(ctx, connect.NewRequest(
			&fleetplanev1.ApproveEnrollmentRequestRequest{Name: name, Approved: true, Labels: labels}))
		if err != nil {
			return fmt.Errorf("approve enrollment request %s: %w", name, err)
		}
		return nil
	}
}

// bearerToken adds an Authorization header to unary calls.
func bearerToken(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

// simHost reports fixed facts, so that thousands of agents do not read /proc.
type simHost struct {
	name string
}

func (h *simHost) SystemInfo() *fleetplanev1.DeviceSystemInfo {
	return &fleetplanev1.DeviceSystemInfo{
		Architecture:    "amd64",
		OperatingSystem: "linux",
		Hostname:        h.name,
		BootId:          "simulated",
	}
}

func (h *simHost) Usage() *fleetplanev1.DeviceResourceUsage {
	return &fleetplanev1.DeviceResourceUsage{CpuPercent: 5, MemoryPercent: 30, DiskPercent: 40}
}
