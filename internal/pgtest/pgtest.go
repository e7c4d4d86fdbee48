// Package pgtest runs a throw-away PostgreSQL server for tests, from the PostgreSQL binaries
// installed on the machine.
//
// Each server lives in its own temporary directory and listens on a free port of 127.0.0.1
// and on a Unix socket in that directory. It runs with fsync and synchronous_commit off, so
// its data does not survive a crash and it must hold nothing but test data. Tests connect as
// the superuser postgres without a password.
//
// A test package either starts one server per test with Start, or shares one server between
// its tests: TestMain calls Main, and each test calls Shared(t).NewDatabase(t) to get a fresh
// database of its own, so tests stay isolated and may run in parallel.
//
// When initdb or postgres is missing, or the tests run as root and there is no postgres
// system user to run the server as, Start and Shared skip the test with the reason, unless
// the environment variable named by RequireEnv is set, in which case they fail it.
//
// The server is stopped when the test (Start) or the test binary (Main) ends. If the binary
// panics, times out or is killed, the kernel kills the postmaster (see startPostgres), and
// the next run removes the directory it left behind.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Environment variables that change how servers start.
const (
	// BinDirEnv names a directory holding initdb and postgres, to use instead of searching.
	BinDirEnv = "FLEETPLANE_PGTEST_BINDIR"
	// RequireEnv, when set to any non-empty value, turns a missing PostgreSQL into a test
	// failure instead of a skip. Set it in CI, where PostgreSQL is always installed.
	RequireEnv = "FLEETPLANE_PGTEST_REQUIRE"
)

// superuser is the role that initdb creates and that every DSN connects as.
const superuser = "postgres"

// maxConnections is the server's max_connections. Parallel tests each open a pool of a few
// connections, so the default of 100 is too small for a shared server.
const maxConnections = 300

// startAttempts is how often start tries a new port when postgres fails to bind one.
const startAttempts = 3

// Server is a running throw-away PostgreSQL server.
type Server struct {
	proc  *process
	admin *pgxpool.Pool // connected to the postgres database, for CREATE and DROP DATABASE
}

// Start starts a server for one test and stops it when the test ends. It skips the test when
// PostgreSQL is not installed (see the package documentation).
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := start()
	if errors.Is(err, errSkip) {
		skipOrFail(tb, err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return s
}

// The server that Main started for the package, or why it could not start.
var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
	mainRan   bool
)

// Main starts one server for the test binary, runs the tests, stops the server and exits.
// Call it from TestMain. When PostgreSQL is not installed the tests still run, and Shared
// skips the ones that need the server.
func Main(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	s, err := start()
	sharedMu.Lock()
	shared, sharedErr, mainRan = s, err, true
	sharedMu.Unlock()
	switch {
	case errors.Is(err, errSkip):
		fmt.Fprintf(os.Stderr, "\n*** %v ***\n\n", err)
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		return 1
	default:
		defer func() {
			if err := s.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	return m.Run()
}

// Shared returns the server that Main started. It skips the test when PostgreSQL is not
// installed, and fails it when TestMain does not call Main.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedMu.Lock()
	s, err, ran := shared, sharedErr, mainRan
	sharedMu.Unlock()
	if !ran {
		tb.Fatal("pgtest.Shared: TestMain must call pgtest.Main(m)")
	}
	if err != nil {
		skipOrFail(tb, err)
	}
	return s
}

func skipOrFail(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv(RequireEnv) != "" {
		tb.Fatalf("%v (%s is set, so this is a failure)", err, RequireEnv)
	}
	tb.Skipf("SKIPPED: %v", err)
}

// start creates, starts and connects to a new server. Errors that wrap errSkip mean that the
// machine cannot run PostgreSQL.
func start() (*Server, error) {
	removeStaleDirs()
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	dir, err := makeDir(cred)
	if err != nil {
		return nil, err
	}
	if err := initDB(binDir, dir, cred); err != nil {
		removeDir(dir)
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		s, err := startOnFreePort(binDir, dir, cred)
		if err == nil {
			return s, nil
		}
		if attempt == startAttempts {
			removeDir(dir)
			return nil, err
		}
	}
}

// startOnFreePort starts postgres on a free port and waits until it accepts connections.
func startOnFreePort(binDir, dir string, cred *syscall.Credential) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	proc, err := startPostgres(binDir, dir, port, cred)
	if err != nil {
		return nil, err
	}
	admin, err := waitReady(proc)
	if err != nil {
		proc.stop()
		return nil, err
	}
	return &Server{proc: proc, admin: admin}, nil
}

// waitReady polls the new server until it accepts a query, it exits, or readyTimeout passes.
func waitReady(proc *process) (*pgxpool.Pool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(dsn(proc.port, "postgres"))
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	cfg.MaxConns = 4
	for {
		if proc.exited() {
			return nil, fmt.Errorf("pgtest: postgres exited during startup:\n%s", proc.logTail())
		}
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err == nil {
			if err = pool.Ping(ctx); err == nil {
				return pool, nil
			}
			pool.Close()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pgtest: postgres did not accept connections within %v: "+
				"%v\n%s", readyTimeout, err, proc.logTail())
		case <-proc.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop shuts the server down and removes its directory. Start and Main call it, and a second
// call does nothing.
func (s *Server) Stop() error {
	if s.admin != nil {
		s.admin.Close()
		s.admin = nil
	}
	s.proc.stop()
	return removeDir(s.proc.dir)
}

// Port returns the server's TCP port on 127.0.0.1.
func (s *Server) Port() int {
	return s.proc.port
}

// DSN returns a connection URL for database on the server.
func (s *Server) DSN(database string) string {
	return dsn(s.proc.port, database)
}

func dsn(port int, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// NewDatabase creates an empty database named t_<random hex> for one test, drops it when the
// test ends, and returns its DSN. Connections still open at that point are terminated.
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		q := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
		if _, err := s.admin.Exec(ctx, q); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.DSN(name)
}
