// Command fleetplane runs the Fleetplane server ("fleetplane serve") and is the command-line
// client for it: apply resource files, get, watch and delete resources.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetplane/fleetplane/client"
	"github.com/spf13/cobra"
)

// defaultServer is the server URL used when neither --server nor FLEETPLANE_SERVER is set.
const defaultServer = "http://127.0.0.1:7080"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// extraCommands contains constructors that other files of this package register in init, so
// that they add subcommands without editing the root command.
var extraCommands []func(*app) *cobra.Command

// app is the state shared by every subcommand of one run.
type app struct {
	server string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

func (a *app) client() *client.Client {
	httpClient := &http.Client{Transport: apiTransport{next: http.DefaultTransport}}
	return client.New(a.server, client.WithHTTPClient(httpClient))
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code: 0 on success, 1 on any error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer,
	getenv func(string) string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := newRootCommand(a)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

func newRootCommand(a *app) *cobra.Command {
	defaultURL := a.getenv("FLEETPLANE_SERVER")
	if defaultURL == "" {
		defaultURL = defaultServer
	}
	root := &cobra.Command{
		Use:           "fleetplane",
		Short:         "Run and manage a Fleetplane control plane for edge devices",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&a.server, "server", defaultURL,
		"URL of the Fleetplane server (default from FLEETPLANE_SERVER)")
	root.AddCommand(newServeCommand(a), newApplyCommand(a), newGetCommand(a),
		newDeleteCommand(a), newVersionCommand(a))
	for _, newCommand := range extraCommands {
		root.AddCommand(newCommand(a))
	}
	return root
}

func newVersionCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this program",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(a.stdout, "fleetplane", version)
			return err
		},
	}
}
