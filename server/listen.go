package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// DefaultListenAddr is the address ListenAndServe uses when Options.ListenAddr is empty. It is
// loopback only, so a first start exposes nothing to the network.
const DefaultListenAddr = "127.0.0.1:7080"

// shutdownTimeout is how long ListenAndServe waits for requests to finish after ctx ends.
// Watch streams end at once, because they stop when the server's base context is canceled.
const shutdownTimeout = 10 * time.Second

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
