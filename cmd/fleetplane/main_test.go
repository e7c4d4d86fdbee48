package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server"
	"github.com/fleetplane/fleetplane/server/tasks"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

const examplesDir = "../../examples"

// startServer serves the API on a loopback port with a SQLite store in a temporary directory,
// until the test ends, and returns its URL.
func startServer(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "fleetplane.db"),
		sqlite.Options{ChangeHook: tasks.Hook})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	srv, err := server.New(server.Config{Store: st})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	serveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs one command line against serverURL in-process.
func runCLI(t *testing.T, serverURL, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"--server", serverURL}, args...),
		strings.NewReader(stdin), &stdout, &stderr, func(string) string { return "" })
	return result{stdout.String(), stderr.String(), code}
}

func mustRun(t *testing.T, serverURL, stdin string, args ...string) string {
	t.Helper()
	r := runCLI(t, serverURL, stdin, args...)
	if r.code != 0 {
		t.Fatalf("fleetplane %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "),
			r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestApplyExamples(t *testing.T) {
	url := startServer(t)

	out := mustRun(t, url, "", "apply", "-f", examplesDir)
	want := "device/kiosk-1 created\ndevice/kiosk-2 created\ndevice/gateway-1 created\n" +
		"fleet/demo created\nrepository/demo-configs created\nresourcesync/demo-fleets created\n"
	if out != want {
		t.Errorf("first apply printed:\n%s\nwant:\n%s", out, want)
	}
	out = mustRun(t, url, "", "apply", "-f", examplesDir)
	if got := strings.Count(out, " unchanged\n"); got != 6 {
		t.Errorf("second apply printed %d unchanged lines, want 6:\n%s", got, out)
	}

	out = mustRun(t, url, "", "get", "devices", "-l", "site=lab", "-o", "name")
	if out != "device/kiosk-1\n" {
		t.Errorf("get -l site=lab printed %q, want device/kiosk-1", out)
	}
	out = mustRun(t, url, "", "get", "devices", "-l", "fleet=demo,site!=lab", "-o", "name")
	if out != "device/gateway-1\ndevice/kiosk-2\n" {
		t.Errorf("get -l fleet=demo,site!=lab printed %q", out)
	}
	for _, kind := range []string{"devices", "fleets", "repo", "rs", "events", "tasks"} {
		out = mustRun(t, url, "", "get", kind)
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if n := utf8.RuneCountInString(line); n > tableWidth {
				t.Errorf("get %s: line of %d characters: %q", kind, n, line)
			}
		}
	}
}

func TestApplySelectsDocumentsFromStdin(t *testing.T) {
	url := startServer(t)
	data, err := os.ReadFile(filepath.Join(examplesDir, "devices.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, url, string(data), "apply", "-f", "-")
	if got := strings.Count(out, " created\n"); got != 3 {
		t.Errorf("apply -f - printed %d created lines, want 3:\n%s", got, out)
	}
}

func TestGetYAMLRoundTrip(t *testing.T) {
	url := startServer(t)
	mustRun(t, url, "", "apply", "-f", filepath.Join(examplesDir, "fleet.yaml"))

	exported := mustRun(t, url, "", "get", "fleet", "demo", "-o", "yaml")
	if out := mustRun(t, url, exported, "apply", "-f", "-"); out != "fleet/demo unchanged\n" {
		t.Errorf("apply of exported YAML printed %q, want unchanged", out)
	}

	// Someone else changes the fleet; the exported file is now stale.
	edited := strings.Replace(exported, "env: lab", "env: prod", 1)
	c := client.New(url)
	fleetKind, err := client.ResolveKind("fleet")
	if err != nil {
		t.Fatal(err)
	}
	obj, err := c.Get(context.Background(), fleetKind, "demo")
	if err != nil {
		t.Fatal(err)
	}
	f := obj.(*fleetplanev1.Fleet)
	f.Metadata.Labels["owner"] = "ops"
	if _, err := c.Update(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, url, edited, "apply", "-f", "-")
	if r.code != 1 {
		t.Fatalf("stale apply exit code = %d, want 1; stdout %q", r.code, r.stdout)
	}
	if strings.Contains(r.stderr, "internal") {
		t.Errorf("stale apply reported an internal error:\n%s", r.stderr)
	}
	for _, want := range []string{`fleet "demo" was modified since this file was exported`,
		`"fleetplane get fleet demo -o yaml"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stale apply stderr lacks %q:\n%s", want, r.stderr)
		}
	}

	// Without a resourceVersion the same edit applies over the other change.
	var kept []string
	for _, line := range strings.Split(edited, "\n") {
		if !strings.Contains(line, "resourceVersion:") {
			kept = append(kept, line)
		}
	}
	if out := mustRun(t, url, strings.Join(kept, "\n"), "apply", "-f", "-"); out != "fleet/demo configured\n" {
		t.Errorf("apply without resourceVersion printed %q, want configured", out)
	}
}

func TestGetJSONListReapplies(t *testing.T) {
	url := startServer(t)
	mustRun(t, url, "", "apply", "-f", filepath.Join(examplesDir, "devices.yaml"))

	exported := mustRun(t, url, "", "get", "devices", "-o", "json")
	if !strings.Contains(exported, `"kind": "List"`) {
		t.Fatalf("get devices -o json wrote no List:\n%s", exported)
	}
	out := mustRun(t, url, exported, "apply", "-f", "-")
	if got := strings.Count(out, " unchanged\n"); got != 3 {
		t.Errorf("apply of the JSON list printed %d unchanged lines, want 3:\n%s", got, out)
	}
}

func TestApplyBadFileWritesNothing(t *testing.T) {
	const device = "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n  name: ok\n---\n"
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"malformed YAML", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n  name: [x\n",
			[]string{"document 2", "line 9", "invalid YAML"}},
		{"unknown kind", "apiVersion: fleetplane.dev/v1\nkind: Gadget\nmetadata: {name: g}\n",
			[]string{"document 2", `unknown kind "Gadget"`, "Device, EnrollmentRequest"}},
		{"unknown field", "apiVersion: fleetplane.dev/v1\nkind: Fleet\nmetadata: {name: f}\n" +
			"spec:\n  template:\n    spec:\n      confg: []\n",
			[]string{"document 2 (Fleet/f)", "spec.template.spec.confg", "unknown field"}},
		{"invalid label value", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n" +
			"  name: d\n  labels:\n    site: no spaces allowed\n",
			[]string{"document 2 (Device/d)", "metadata.labels.site", "invalid label value"}},
	}
	url := startServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, url, device+tt.doc, "apply", "-f", "-")
			if r.code != 1 {
				t.Errorf("exit code = %d, want 1", r.code)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing applied", r.stdout)
			}
			for _, want := range append(tt.want, "-: ", "nothing was applied") {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if out := mustRun(t, url, "", "get", "devices", "-o", "name"); out != "" {
				t.Errorf("devices after a rejected apply: %q, want none", out)
			}
		})
	}
}

func TestApplyServerRejection(t *testing.T) {
	url := startServer(t)
	doc := "apiVersion: fleetplane.dev/v1\nkind: Repository\nmetadata: {name: r}\n" +
		"spec: {type: svn, url: https://example.com/r}\n"
	r := runCLI(t, url, doc, "apply", "-f", "-")
	if r.code != 1 {
		t.Errorf("exit code = %d, want 1", r.code)
	}
	for _, want := range []string{"repository/r (-, document 1)", "invalid", "spec.type",
		`use "git" or "http"`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestDeleteByNameAndAll(t *testing.T) {
	url := startServer(t)
	mustRun(t, url, "", "apply", "-f", examplesDir)

	if out := mustRun(t, url, "", "delete", "dev", "kiosk-1"); out != "device/kiosk-1 deleted\n" {
		t.Errorf("delete printed %q", out)
	}
	r := runCLI(t, url, "", "get", "device", "kiosk-1")
	if r.code != 1 || !strings.Contains(r.stderr, `get device "kiosk-1": not found`) {
		t.Errorf("get of deleted device: exit %d, stderr %q", r.code, r.stderr)
	}
	if out := mustRun(t, url, "", "delete", "devices", "--all"); out != "2 devices deleted\n" {
		t.Errorf("delete --all printed %q", out)
	}
	r = runCLI(t, url, "", "delete", "rs", "--all")
	if r.code != 1 || !strings.Contains(r.stderr, "delete them by name") {
		t.Errorf("delete rs --all: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runCLI(t, url, "", "delete", "fleet", "demo", "nope")
	if r.code != 1 || !strings.Contains(r.stderr, `delete fleet "nope": not found`) {
		t.Errorf("delete of a missing fleet: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestGetInvalidSelector(t *testing.T) {
	url := startServer(t)
	r := runCLI(t, url, "", "get", "devices", "-l", "site in (a")
	if r.code != 1 {
		t.Errorf("exit code = %d, want 1", r.code)
	}
	if !strings.Contains(r.stderr, "list devices: invalid: ") ||
		strings.Contains(r.stderr, "internal") {
		t.Errorf("stderr = %q, want the server's invalid-argument message", r.stderr)
	}
}

func TestUnreachableServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()

	r := runCLI(t, url, "", "get", "devices")
	want := "cannot reach the Fleetplane server at " + url + ": connection refused; " +
		`start it with "fleetplane serve" or set --server`
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
}

func TestWatchShowsChange(t *testing.T) {
	url := startServer(t)
	mustRun(t, url, "", "apply", "-f", filepath.Join(examplesDir, "devices.yaml"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--server", url, "get", "devices", "-w"}, nil, pw, &stderr,
			func(string) string { return "" })
		pw.Close()
	}()
	lines := make(chan string)
	go func() {
		scanner := bufio.NewScanner(pr)
		for scanner.Scan() {
			lines <- scanner.Text()
		}
		close(lines)
	}()

	waitLine(t, lines, "EVENT", "NAME")
	waitLine(t, lines, "LISTED", "kiosk-1")
	waitLine(t, lines, "LISTED", "kiosk-2")
	doc := "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n  name: kiosk-9\n"
	mustRun(t, url, doc, "apply", "-f", "-")
	waitLine(t, lines, "ADDED", "kiosk-9")

	cancel()
	go func() {
		for range lines { // drain so that run can finish writing
		}
	}()
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("watch exit code = %d, want 0; stderr %q", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop after its context was canceled")
	}
}

// waitLine reads lines until one starts with change and holds name, or fails after a deadline.
func waitLine(t *testing.T, lines <-chan string, change, name string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("watch output ended before a %s line for %s", change, name)
			}
			if strings.HasPrefix(line, change) && strings.Contains(line, name) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s line for %s within 15s", change, name)
		}
	}
}
