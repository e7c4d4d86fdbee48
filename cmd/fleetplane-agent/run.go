package main

import (
	"errors"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetplane/fleetplane/agent"
	"github.com/fleetplane/fleetplane/agent/apply"
)

func newRunCommand(logger func() (*slog.Logger, error)) *cobra.Command {
	var (
		server, caFile, dataDir, root, name string
		labels                              []string
		statusInterval                      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Enroll the device if needed, then apply the specs the server sends",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			if dataDir == "" || root == "" {
				return errors.New("--data-dir and --root are required")
			}
			ca, err := readCAFile(caFile)
			if err != nil {
				return err
			}
			labelMap, err := parseLabels(labels)
			if err != nil {
				return err
			}
			applier, err := apply.Open(dataDir, root, log)
			if err != nil {
				return err
			}
			a, err := agent.New(agent.Config{
				Server: server, CACertPEM: ca, DataDir: dataDir, Name: name, Labels: labelMap,
				StatusInterval: statusInterval, Applier: applier, Logger: log,
			})
			if err != nil {
				return err
			}
			log.Info("agent starting", "device", a.Name(), "server", server, "root", root,
				"agent_version", agent.Version)
			if err := a.Run(cmd.Context()); err != nil {
				return err
			}
			log.Info("agent stopped", "device", a.Name())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "https://127.0.0.1:7443",
		"base URL of the server's agent port, or comma-separated URLs of several replicas to fail over between")
	f.StringVar(&caFile, "ca-file", "", "PEM file of the CA that signed the server's certificate (required)")
	f.StringVar(&dataDir, "data-dir", "", "directory for the device key, certificate and spec state (required)")
	f.StringVar(&root, "root", "", "directory that spec file paths are relative to, / on a real device (required)")
	f.StringVar(&name, "name", "", `device name (default "dev-" and 16 hex digits of the public key's SHA-256)`)
	f.StringArrayVar(&labels, "label", nil, "label KEY=VALUE for the enrollment request; repeatable")
	f.DurationVar(&statusInterval, "status-interval", time.Minute, "time between periodic status reports")
	return cmd
}
