package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetplane/fleetplane/server/tasks"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// DefaultListenAddr is the address ListenAndServe uses when Options.ListenAddr is empty. It is
// loopback only, so a first start exposes nothing to the network.
const DefaultListenAddr = "127.0.0.1:7080"

// shutdownTimeout is how long ListenAndServe waits for requests to finish after ctx ends.
// Watch streams end at once, because they stop when the server's base context is canceled.
const shutdownTimeout = 10 * time.Second

// Options configures ListenAndServe.
type Options struct {
	// ListenAddr is the TCP address to serve on; empty means DefaultListenAddr.
	ListenAddr string
	// DataDir holds the SQLite database, fleetplane.db. It is created with mode 0700.
	DataDir string
	Logger  *slog.Logger
}

// ListenAndServe opens the SQLite store in opts.DataDir and serves the API until ctx ends, then
// shuts down gracefully.
func ListenAndServe(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.DataDir == "" {
		return errors.New("listen and serve: Options.DataDir is empty; set a data directory")
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	// NOTE: the task hook only enqueues tasks; the dispatcher that runs them is started
	// elsewhere.
	st, err := sqlite.Open(ctx, filepath.Join(opts.DataDir, "fleetplane.db"),
		sqlite.Options{ChangeHook: tasks.Hook, Logger: log})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	srv, err := New(Config{Store: st, Logger: log})
	if err != nil {
		return err
	}
	addr := opts.ListenAddr
	if addr == "" {
		addr = DefaultListenAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return srv.Serve(ctx, ln)
}

// Serve serves the API on ln until ctx ends, then shuts down gracefully. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	hs := NewHTTPServer(s.Handler())
	hs.BaseContext = func(net.Listener) context.Context { return baseCtx }

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("server started", slog.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	s.log.Info("server stopping", slog.String("addr", ln.Addr().String()))
	cancelBase()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := hs.Shutdown(shutdownCtx)
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	err = errors.Join(err, s.Shutdown(shutdownCtx))
	if err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	s.log.Info("server stopped")
	return nil
}

// NewHTTPServer returns an http.Server for h that speaks HTTP/1.1 and unencrypted HTTP/2
// (h2c), so that Connect, gRPC and gRPC-Web clients share one port.
func NewHTTPServer(h http.Handler) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
	}
}
