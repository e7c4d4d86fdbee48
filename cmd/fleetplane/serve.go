package main

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fleetplane/fleetplane/server"
	"github.com/spf13/cobra"
)

func newServeCommand(a *app) *cobra.Command {
	var opts server.Options
	var debug bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Fleetplane server with an embedded SQLite database",
		Long: "Run the Fleetplane server until SIGINT or SIGTERM, then shut down gracefully.\n" +
			"The operator API listens on --listen; device agents connect over mutual TLS to\n" +
			"--agent-listen. The database (unless --database is set) and the certificate\n" +
			"authority live in --data-dir; logs go to standard error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.DataDir == "" {
				dir, err := defaultDataDir(a.getenv)
				if err != nil {
					return err
				}
				opts.DataDir = dir
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			opts.Logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
			opts.Logger.Info("starting server", slog.String("data_dir", opts.DataDir),
				slog.String("listen", listenAddr(opts.ListenAddr)))
			return server.ListenAndServe(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.DataDir, "data-dir", "",
		"directory for the database (default $XDG_DATA_HOME/fleetplane or ~/.local/share/fleetplane)")
	cmd.Flags().StringVar(&opts.ListenAddr, "listen", server.DefaultListenAddr,
		"TCP address to serve the API on")
	cmd.Flags().StringVar(&opts.AgentListenAddr, "agent-listen", server.DefaultAgentListenAddr,
		`TCP address of the agent port (TLS); "off" disables it`)
	cmd.Flags().StringSliceVar(&opts.AgentHosts, "agent-host", nil,
		"host name or IP address for the agent port's certificate (repeatable; default localhost, 127.0.0.1, ::1)")
	cmd.Flags().StringVar(&opts.DatabaseURL, "database", "",
		"PostgreSQL or CockroachDB URL (postgres://...) to use instead of the embedded SQLite database")
	cmd.Flags().StringVar(&opts.ReplicaID, "replica-id", "",
		"name of this replica among those sharing the database (default: random)")
	cmd.Flags().StringVar(&opts.AdvertiseAddr, "advertise", "",
		"address where other replicas reach this one (default: --peer-listen, else --listen)")
	cmd.Flags().StringVar(&opts.PeerListenAddr, "peer-listen", "",
		"TCP address of the replica-to-replica gRPC service (plaintext; default off)")
	cmd.Flags().StringVar(&opts.PKIDir, "pki-dir", "",
		"directory of the certificate authority, shared by all replicas of one database (default --data-dir/pki)")
	cmd.Flags().DurationVar(&opts.LeaseDuration, "lease-duration", 0,
		"shard lease time; a dead replica's shards move after about this long (default 15s)")
	_ = cmd.Flags().MarkHidden("lease-duration") // for tests of failover
	cmd.Flags().StringVar(&opts.DebugListenAddr, "debug-listen", "",
		"serve Go runtime profiles under /debug/pprof/ on this address, without authentication (use a loopback address)")
	cmd.Flags().BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}

func listenAddr(addr string) string {
	if addr == "" {
		return server.DefaultListenAddr
	}
	return addr
}

// defaultDataDir returns $XDG_DATA_HOME/fleetplane, or ~/.local/share/fleetplane.
func defaultDataDir(getenv func(string) string) (string, error) {
	if dir := getenv("XDG_DATA_HOME"); dir != "" {
		return filepath.Join(dir, "fleetplane"), nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", errors.New("cannot find a data directory: HOME is not set; " +
				"pass --data-dir")
		}
	}
	return filepath.Join(home, ".local", "share", "fleetplane"), nil
}
