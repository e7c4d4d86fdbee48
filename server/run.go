package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/gofrs/flock"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"golang.org/x/sync/errgroup"

	"github.com/fleetplane/fleetplane/dispatcher"
	"github.com/fleetplane/fleetplane/server/agentapi"
	"github.com/fleetplane/fleetplane/server/events"
	"github.com/fleetplane/fleetplane/server/identity"
	"github.com/fleetplane/fleetplane/server/replica"
	"github.com/fleetplane/fleetplane/server/tasks"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/postgres"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// DefaultAgentListenAddr is the agent port's address when Options.AgentListenAddr is empty.
const DefaultAgentListenAddr = "127.0.0.1:7443"

// Maintenance intervals of a running server.
const (
	pruneInterval = 10 * time.Minute
	// changeRetention is how long change-log entries are kept for watchers; the store keeps
	// at least its own minimum number of entries whatever their age.
	changeRetention = time.Hour
)

// Options configures ListenAndServe.
type Options struct {
	// ListenAddr is the operator API's TCP address; empty means DefaultListenAddr.
	ListenAddr string
	// AgentListenAddr is the agent port's TCP address (TLS); empty means
	// DefaultAgentListenAddr, and "off" disables the agent port.
	AgentListenAddr string
	// AgentHosts are the host names and IP addresses in the agent port's server certificate;
	// empty means localhost, 127.0.0.1 and ::1.
	AgentHosts []string
	// DataDir holds the SQLite database (fleetplane.db) and the certificate authority (pki/).
	// It is created with mode 0700.
	DataDir string
	// DatabaseURL, when set, selects PostgreSQL or CockroachDB
	// (postgres://user@host:port/db) instead of the embedded SQLite database.
	DatabaseURL string
	// ReplicaID names this process among the replicas sharing a database; empty means random.
	ReplicaID string
	// PeerListenAddr, when set, is the TCP address of the replica-to-replica gRPC service
	// (package replica), which makes replicas sharing a database nudge each other.
	PeerListenAddr string
	// AdvertiseAddr is where other replicas reach this one; empty means PeerListenAddr, or
	// ListenAddr when that is empty too.
	AdvertiseAddr string
	// PKIDir holds the certificate authority's key and certificate; empty means DataDir/pki.
	// Replicas sharing a database must share this directory (or a copy of it), so a device
	// enrolled through one replica is accepted by all. The first process to start creates
	// the CA with exclusive file creation, so replicas may start at the same time.
	PKIDir string
	// LeaseDuration is the shard lease time of the dispatcher; zero means its default. A
	// dead replica's shards move to the others after about this long.
	LeaseDuration time.Duration
	// DebugListenAddr, when set, serves the Go runtime profiles (net/http/pprof) under
	// /debug/pprof/ on this TCP address. It has no authentication: bind it to loopback.
	DebugListenAddr string
	Logger          *slog.Logger
}

// ListenAndServe runs a complete server until ctx ends: the store, the task dispatcher with
// every task, the operator API and the agent port. Then it shuts everything down gracefully.
func ListenAndServe(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.DataDir == "" {
		return errors.New("listen and serve: Options.DataDir is empty; set a data directory")
	}
	if err := checkReplicaOptions(opts); err != nil {
		return err
	}
	if opts.DatabaseURL != "" && opts.PeerListenAddr == "" {
		log.Warn("no peer address: other replicas cannot wake this one or ask it to push, so " +
			"its tasks wait for the next poll and its agents for the next sweep; set --peer-listen")
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	unlock, err := lockDataDir(opts.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	replicaID := opts.ReplicaID
	if replicaID == "" {
		if replicaID, err = dataDirReplicaID(opts.DataDir); err != nil {
			return err
		}
	}

	st, pruner, err := openStore(ctx, opts, log)
	if err != nil {
		return err
	}
	defer st.Close()
	ownPKI := filepath.Join(opts.DataDir, "pki")
	pkiDir := orDefault(opts.PKIDir, ownPKI)
	// The agent port's certificate names this replica's hosts, so it stays in the data
	// directory even when the CA directory is shared.
	ca, err := identity.LoadOrCreateCA(pkiDir, identity.WithServerCertDir(ownPKI))
	if err != nil {
		return fmt.Errorf("load certificate authority: %w", err)
	}
	if opts.DatabaseURL != "" {
		if err := checkSharedCA(ctx, st, ca, pkiDir); err != nil {
			return err
		}
	}

	// The API server owns the Prometheus exporter; the other components record through the
	// global meter provider, so it must be set before they create their instruments.
	srv, err := New(Config{Store: st, Logger: log, Signer: ca})
	if err != nil {
		return err
	}
	otel.SetMeterProvider(srv.meterProvider)

	agents, err := agentapi.New(agentapi.Config{Store: st, CA: ca, SessionReplica: replicaID,
		Logger: log.With("component", "agentapi")})
	if err != nil {
		return err
	}
	apiAddr := orDefault(opts.ListenAddr, DefaultListenAddr)
	disp, err := dispatcher.New(dispatcher.Config{
		Store:     st,
		ReplicaID: replicaID,
		// With SQLite the data directory lock already makes this process the only one.
		ExclusiveID:     opts.DatabaseURL == "",
		Address:         orDefault(opts.AdvertiseAddr, orDefault(opts.PeerListenAddr, apiAddr)),
		LeaseDuration:   opts.LeaseDuration,
		ConnectedAgents: agents.Connected,
		Logger:          log.With("component", "dispatcher"),
		OnFailure:       recordTaskFailure(st, log),
	})
	if err != nil {
		return err
	}
	notify := agents.Notify
	var peers *replica.Peers
	if opts.PeerListenAddr != "" {
		peers, err = replica.New(replica.Config{
			Store: st, ReplicaID: disp.ID(), LiveAfter: orDefault(opts.LeaseDuration, defaultLease),
			Wake: disp.Wake, Notify: agents.Notify, Logger: log.With("component", "peers"),
		})
		if err != nil {
			return err
		}
		notify = peers.Notify
	}
	tasks.Register(disp, tasks.Deps{Store: st, Logger: log.With("component", "tasks"), Notify: notify})

	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", apiAddr, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	if peers != nil {
		peerLn, err := net.Listen("tcp", opts.PeerListenAddr)
		if err != nil {
			return fmt.Errorf("listen on peer address %s: %w", opts.PeerListenAddr, err)
		}
		g.Go(func() error { return peers.Serve(gctx, peerLn) })
		g.Go(func() error { return peers.Run(gctx) })
	}
	if opts.DebugListenAddr != "" {
		debugLn, err := net.Listen("tcp", opts.DebugListenAddr)
		if err != nil {
			return fmt.Errorf("listen on debug address %s: %w", opts.DebugListenAddr, err)
		}
		log.Info("debug port starting", slog.String("addr", debugLn.Addr().String()))
		g.Go(func() error { return serveDebug(gctx, debugLn) })
	}
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return disp.Run(gctx) })
	g.Go(func() error { return pruneChanges(gctx, pruner, log) })
	if agentAddr := orDefault(opts.AgentListenAddr, DefaultAgentListenAddr); agentAddr != "off" {
		hosts := opts.AgentHosts
		if len(hosts) == 0 {
			hosts = []string{"localhost", "127.0.0.1", "::1"}
		}
		log.Info("agent port starting", slog.String("addr", agentAddr),
			slog.String("hosts", strings.Join(hosts, ",")))
		g.Go(func() error { return agents.ListenAndServeTLS(gctx, agentAddr, hosts) })
	}
	return g.Wait()
}

// lockDataDir takes an exclusive lock on the data directory for the life of the process, so
// that a second server cannot open the same SQLite database and certificates.
func lockDataDir(dir string) (unlock func(), err error) {
	lock := flock.New(filepath.Join(dir, "fleetplane.lock"))
	locked, err := lock.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	if !locked {
		return nil, fmt.Errorf("data directory %s is in use by another fleetplane server; "+
			"stop it, or give this one its own --data-dir", dir)
	}
	return func() { _ = lock.Unlock() }, nil
}

// dataDirReplicaID returns the replica id kept in the data directory, creating a random one
// on first start. A server restarted on the same directory then renews its own shard leases at
// once instead of waiting for the old process's leases to expire.
func dataDirReplicaID(dir string) (string, error) {
	path := filepath.Join(dir, "replica-id")
	data, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(data))
		if !replicaIDPattern.MatchString(id) {
			return "", fmt.Errorf("replica id %q in %s is invalid; delete the file to get a new "+
				"one, or set --replica-id", id, path)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read replica id: %w", err)
	}
	id := dispatcher.NewReplicaID()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write replica id: %w", err)
	}
	return id, nil
}

// checkSharedCA makes sure that every replica of a database signs with the same certificate
// authority. The first replica records its CA's fingerprint; a replica with another CA would
// issue certificates that the others reject, so it must not start.
func checkSharedCA(ctx context.Context, st store.Store, ca *identity.CA, pkiDir string) error {
	sum := sha256.Sum256(ca.Certificate().Raw)
	fingerprint := hex.EncodeToString(sum[:])
	var stored string
	err := st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		stored, err = tx.InitSetting(ctx, "ca_fingerprint", fingerprint)
		return err
	})
	if err != nil {
		return fmt.Errorf("record the certificate authority: %w", err)
	}
	if stored != fingerprint {
		return fmt.Errorf("the certificate authority in %s (SHA-256 %s) is not the one the "+
			"other replicas of this database use (SHA-256 %s); give every replica the same "+
			"--pki-dir", pkiDir, fingerprint[:16], stored[:min(16, len(stored))])
	}
	return nil
}

// replicaIDPattern is the form of a replica id, which appears in logs, metrics and leases.
var replicaIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkReplicaOptions rejects replica settings that cannot work.
func checkReplicaOptions(opts Options) error {
	if opts.ReplicaID != "" && !replicaIDPattern.MatchString(opts.ReplicaID) {
		return fmt.Errorf("invalid replica id %q: use 1 to 63 letters, digits, '.', '_' or '-', "+
			"starting with a letter or digit", opts.ReplicaID)
	}
	if opts.PeerListenAddr != "" && opts.DatabaseURL == "" {
		return errors.New("a peer address needs a shared database: replicas share a " +
			"PostgreSQL or CockroachDB database, and the embedded SQLite store serves one " +
			"process; set --database or drop --peer-listen")
	}
	return nil
}

// recordTaskFailure returns the dispatcher's OnFailure callback: a Warning event on the object
// that the failed task's key names ("Kind/name"), or on the task itself for periodic tasks.
func recordTaskFailure(st store.Store, log *slog.Logger) func(context.Context, store.Task, error) {
	return func(ctx context.Context, task store.Task, taskErr error) {
		kind, name, ok := strings.Cut(task.Key, "/")
		if !ok {
			kind, name = "Task", task.Key
		}
		err := st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			return events.Record(ctx, tx, events.Entry{
				Kind:      kind,
				Name:      name,
				Reason:    "TaskFailed",
				Type:      events.Warning,
				Message:   fmt.Sprintf("task %s failed after %d attempts: %v", task.Kind, task.Attempts, taskErr),
				Actor:     "service:dispatcher",
				Component: "dispatcher",
			})
		})
		if err != nil {
			log.Error("record task failure event failed", slog.String("task_kind", task.Kind),
				slog.String("task_key", task.Key), slog.Any("err", err))
		}
	}
}

// changePruner is the part of a store backend that trims the change log.
type changePruner interface {
	PruneChanges(ctx context.Context, maxAge time.Duration) (int64, error)
}

// openStore opens PostgreSQL when opts.DatabaseURL is set and SQLite in opts.DataDir otherwise.
// The task graph is the store's change hook, so every write enqueues the tasks it triggers in
// its own transaction.
func openStore(ctx context.Context, opts Options, log *slog.Logger) (store.Store, changePruner, error) {
	if opts.DatabaseURL != "" {
		st, err := postgres.Open(ctx, opts.DatabaseURL, postgres.Options{ChangeHook: tasks.Hook, Logger: log})
		if err != nil {
			return nil, nil, err // it starts with "open postgres store"
		}
		return st, st, nil
	}
	path := filepath.Join(opts.DataDir, "fleetplane.db")
	st, err := sqlite.Open(ctx, path, sqlite.Options{ChangeHook: tasks.Hook, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("open SQLite store %s: %w", path, err)
	}
	return st, st, nil
}

// pruneChanges trims old change-log entries every pruneInterval until ctx ends.
func pruneChanges(ctx context.Context, p changePruner, log *slog.Logger) error {
	ticker := time.NewTicker(pruneInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			n, err := p.PruneChanges(ctx, changeRetention)
			if err != nil && ctx.Err() == nil {
				log.Warn("prune change log failed", slog.Any("err", err))
				continue
			}
			if n > 0 {
				log.Debug("pruned change log", slog.Int64("entries", n))
			}
		}
	}
}

// defaultLease is the dispatcher's default lease duration.
const defaultLease = 15 * time.Second

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
