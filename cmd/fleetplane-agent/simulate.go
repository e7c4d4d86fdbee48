package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetplane/fleetplane/agent/simulate"
)

func newSimulateCommand(logger func() (*slog.Logger, error)) *cobra.Command {
	var (
		opts             simulate.Options
		caFile           string
		labels           []string
		progressInterval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Run many simulated devices in one process, for load tests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			if opts.CACertPEM, err = readCAFile(caFile); err != nil {
				return err
			}
			if opts.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if progressInterval <= 0 {
				return fmt.Errorf("--progress-interval %v is invalid: give a positive duration", progressInterval)
			}
			if opts.ApproveToken == "" {
				opts.ApproveToken = os.Getenv("FLEETPLANE_TOKEN")
			}
			opts.Logger = log
			sim, err := simulate.New(opts)
			if err != nil {
				return err
			}
			return runSimulation(cmd.Context(), sim, cmd.OutOrStdout(), progressInterval)
		},
	}
	addSimulateFlags(cmd, &opts, &caFile, &labels, &progressInterval)
	return cmd
}

func addSimulateFlags(
	cmd *cobra.Command,
	opts *simulate.Options,
	caFile *string,
	labels *[]string,
	progressInterval *time.Duration,
) {
	f := cmd.Flags()
	f.IntVar(&opts.Count, "count", 1, "number of simulated devices")
	f.StringVar(&opts.Server, "server", "https://127.0.0.1:7443",
		"base URL of the server's agent port, or comma-separated URLs of several replicas to fail over between")
	f.StringVar(caFile, "ca-file", "", "PEM file of the CA that signed the server's certificate (required)")
	f.StringVar(&opts.ApproveURL, "approve-server", "",
		"base URL of the operator API, for example http://127.0.0.1:7080; when set, the simulator approves its own enrollment requests")
	f.StringVar(&opts.ApproveToken, "token", "",
		"bearer token for --approve-server (default $FLEETPLANE_TOKEN)")
	f.StringArrayVar(labels, "label", nil, "label KEY=VALUE for every device; repeatable")
	f.StringVar(&opts.NamePrefix, "name-prefix", "",
		"name devices PREFIX00000, PREFIX00001, ... (default: derived from each key)")
	f.DurationVar(&opts.StartInterval, "start-interval", 0, "pause between starting two devices")
	f.DurationVar(&opts.StatusInterval, "status-interval", time.Minute, "time between periodic status reports")
	f.DurationVar(progressInterval, "progress-interval", 5*time.Second, "time between progress lines")
}

// runSimulation runs sim until ctx ends and prints a progress line every interval and once at
// the end.
func runSimulation(ctx context.Context, sim *simulate.Simulator, out io.Writer, interval time.Duration) error {
	started := time.Now()
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case err := <-done:
			fmt.Fprintf(out, "%6.0fs %s\n", time.Since(started).Seconds(), sim.Progress())
			return err
		case <-ticker.C:
			fmt.Fprintf(out, "%6.0fs %s\n", time.Since(started).Seconds(), sim.Progress())
		}
	}
}
