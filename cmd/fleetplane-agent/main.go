// Command fleetplane-agent is the Fleetplane device agent. "run" enrolls the device and keeps
// it in sync with the server; "simulate" runs many simulated devices for load tests.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fleetplane/fleetplane/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fleetplane-agent:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "fleetplane-agent",
		Short:         "Fleetplane device agent",
		Version:       agent.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info",
		"minimum log level: debug, info, warn or error")
	logger := func() (*slog.Logger, error) {
		var level slog.Level
		if err := level.UnmarshalText([]byte(logLevel)); err != nil {
			return nil, fmt.Errorf("--log-level %q is invalid: use debug, info, warn or error", logLevel)
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
	}
	root.AddCommand(newRunCommand(logger), newSimulateCommand(logger))
	return root
}

// parseLabels turns KEY=VALUE flags into a map.
func parseLabels(flags []string) (map[string]string, error) {
	labels := make(map[string]string, len(flags))
	for _, kv := range flags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q is invalid: use KEY=VALUE", kv)
		}
		labels[k] = v
	}
	return labels, nil
}

// readCAFile reads the CA certificate that the server's TLS certificate must chain to.
func readCAFile(path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("--ca-file is missing: give the PEM file of the server's CA")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	return data, nil
}
