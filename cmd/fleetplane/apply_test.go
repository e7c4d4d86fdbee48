package main

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server"
	"github.com/fleetplane/fleetplane/server/tasks"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// startWrappedServer is startServer with wrap around the API handler, so that a test can act
// between a client's requests.
func startWrappedServer(t *testing.T, wrap func(url string, next http.Handler) http.Handler) string {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "fleetplane.db"),
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
	url := "http://" + ln.Addr().String()
	hs := server.NewHTTPServer(wrap(url, srv.Handler()))
	go hs.Serve(ln)
	t.Cleanup(func() {
		if err := hs.Close(); err != nil {
			t.Errorf("close HTTP server: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return url
}

func TestApplyRetriesConflict(t *testing.T) {
	var interfered atomic.Int32
	// The first UpdateFleet is preceded by another writer's update, so it fails with ABORTED
	// and apply must get the fleet again and retry.
	url := startWrappedServer(t, func(url string, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fleetplane.v1.FleetService/UpdateFleet" &&
				interfered.CompareAndSwap(0, 1) {
				updateFleetLabel(t, url, "demo", "touched", "yes")
			}
			next.ServeHTTP(w, r)
		})
	})
	mustRun(t, url, "", "apply", "-f", filepath.Join(examplesDir, "fleet.yaml"))

	edited := "apiVersion: fleetplane.dev/v1\nkind: Fleet\nmetadata:\n  name: demo\n" +
		"  labels: {env: prod}\nspec:\n  selector:\n    matchLabels: {fleet: demo}\n"
	out := mustRun(t, url, edited, "apply", "-f", "-")
	if out != "fleet/demo configured\n" {
		t.Errorf("apply printed %q, want configured", out)
	}
	if interfered.Load() != 1 {
		t.Fatal("the competing update did not run")
	}
	got := getFleet(t, url, "demo")
	if env := got.GetMetadata().GetLabels()["env"]; env != "prod" {
		t.Errorf("label env = %q after the retried apply, want prod", env)
	}
}

func getFleet(t *testing.T, url, name string) *fleetplanev1.Fleet {
	t.Helper()
	kind, err := client.ResolveKind("fleet")
	if err != nil {
		t.Fatal(err)
	}
	obj, err := client.New(url).Get(context.Background(), kind, name)
	if err != nil {
		t.Fatalf("get fleet %s: %v", name, err)
	}
	return obj.(*fleetplanev1.Fleet)
}

func updateFleetLabel(t *testing.T, url, name, key, value string) {
	t.Helper()
	f := getFleet(t, url, name)
	f.Metadata.Labels[key] = value
	if _, err := client.New(url).Update(context.Background(), f); err != nil {
		t.Errorf("competing update of fleet %s: %v", name, err)
	}
}
