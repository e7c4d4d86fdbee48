package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fleetplane/fleetplane/client"
	"github.com/fleetplane/fleetplane/client/resourcefile"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server"
)

const (
	deviceA = "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {name: a}\n"
	deviceC = "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {name: c}\n"
	// badRepository passes the client's checks, and the server rejects its type.
	badRepository = "apiVersion: fleetplane.dev/v1\nkind: Repository\nmetadata: {name: r}\n" +
		"spec: {type: svn, url: https://example.com/r}\n"
)

func TestApplyPartialFailureLists(t *testing.T) {
	url := startServer(t)
	input := deviceA + "---\n" + badRepository + "---\n" + deviceC
	r := runCLI(t, url, input, "apply", "-f", "-")
	if r.code != 1 {
		t.Errorf("exit code = %d, want 1", r.code)
	}
	if r.stdout != "device/a created\ndevice/c created\n" {
		t.Errorf("stdout = %q, want devices a and c created", r.stdout)
	}
	for _, want := range []string{
		"1 of 3 documents failed, so the input was applied only in part",
		"applied: device/a, device/c\n",
		"failed: repository/r (-, document 2)\n",
		"apply again",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}

	help := mustRun(t, url, "", "apply", "--help")
	if strings.Contains(help, "a file with an error changes\nnothing") {
		t.Errorf("apply --help still promises that any error changes nothing:\n%s", help)
	}
	if !strings.Contains(help, "Applied\ndocuments are not rolled back") {
		t.Errorf("apply --help does not say that applied documents stay:\n%s", help)
	}
}

func TestApplyAllFailedSaysNothingApplied(t *testing.T) {
	url := startServer(t)
	r := runCLI(t, url, badRepository, "apply", "-f", "-")
	if r.code != 1 {
		t.Errorf("exit code = %d, want 1", r.code)
	}
	want := "all 1 documents failed, so nothing was applied: repository/r (-, document 1)"
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
}

func TestApplyStopsOnNonAPIResponse(t *testing.T) {
	var requests atomic.Int32
	url := startWrappedServer(t, func(_ string, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if requests.Add(1) > 1 {
				http.Error(w, "proxy error", http.StatusBadGateway)
				return
			}
			next.ServeHTTP(w, req)
		})
	})
	r := runCLI(t, url, deviceA+"---\n"+deviceC+"---\n"+badRepository, "apply", "-f", "-")
	if r.code != 1 {
		t.Errorf("exit code = %d, want 1", r.code)
	}
	for _, want := range []string{
		"did not respond as a Fleetplane API",
		"applied before this error: device/a\n",
		"failed: none\n",
		"not attempted: device/c, repository/r",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if got := requests.Load(); got != 2 {
		t.Errorf("server got %d requests, want 2 (apply must stop after the non-API response)", got)
	}
}

func TestMaxRequestBytesMatchesServer(t *testing.T) {
	if resourcefile.MaxRequestBytes != server.MaxRequestBytes {
		t.Errorf("resourcefile.MaxRequestBytes = %d, server.MaxRequestBytes = %d",
			resourcefile.MaxRequestBytes, server.MaxRequestBytes)
	}
}

// bigFleet returns a fleet YAML document whose inline file content has size bytes.
func bigFleet(size int) string {
	return "apiVersion: fleetplane.dev/v1\nkind: Fleet\nmetadata: {name: big}\nspec:\n" +
		"  template:\n    spec:\n      config:\n        - name: a\n          inline:\n" +
		"            - path: /a\n              content: " + strings.Repeat("a", size) + "\n"
}

func TestApplyObjectTooLarge(t *testing.T) {
	url := startServer(t)
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte(deviceA+"---\n"+bigFleet(server.MaxRequestBytes)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, url, "", "apply", "-f", path)
	if r.code != 1 {
		t.Errorf("exit code = %d, want 1", r.code)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing applied", r.stdout)
	}
	for _, want := range []string{"nothing was applied", path + ": document 2 (Fleet/big)",
		"server's limit of 4.00 MiB", "move large inline content into a repository"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestServerMessageSizeError(t *testing.T) {
	url := startServer(t)
	docs, err := resourcefile.Parse("big.yaml", []byte(bigFleet(1)))
	if err != nil {
		t.Fatal(err)
	}
	fleet := docs[0].Object.(*fleetplanev1.Fleet)
	// Sent without the client's check, the request reaches the server's limit.
	fleet.Spec.Template.Spec.Config[0].Inline[0].Content = strings.Repeat("a", server.MaxRequestBytes)
	_, err = client.New(url).Create(context.Background(), fleet)
	if err == nil {
		t.Fatal("Create of an oversized fleet returned no error")
	}
	a := &app{server: url}
	msg := a.apiError("apply fleet/big", err).Error()
	for _, want := range []string{"apply fleet/big: the request is larger than the server's " +
		"limit of 4 MiB", "move large inline content into a repository"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestGetKindShortNames(t *testing.T) {
	url := startServer(t)
	for _, kind := range []string{"devs", "DEV", "repos", "tvs", "csrs", "csr", "rss", "er",
		"ers", "evs", "fleets", "templateversion"} {
		r := runCLI(t, url, "", "get", kind)
		if r.code != 0 {
			t.Errorf("get %s: exit %d, stderr %q", kind, r.code, r.stderr)
		}
	}

	r := runCLI(t, url, "", "get", "gadgets")
	if r.code != 1 {
		t.Errorf("get gadgets: exit code = %d, want 1", r.code)
	}
	for _, want := range []string{`unknown resource kind "gadgets"`,
		"device (devices, dev, devs)", "repository (repositories, repo, repos)",
		"enrollmentrequest (enrollmentrequests, er, ers, csr, csrs)"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("get gadgets: stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestServerNotFleetplaneAPI(t *testing.T) {
	tlsServer := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsServer.Close)
	webServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>welcome</html>")
	}))
	t.Cleanup(webServer.Close)

	tests := []struct {
		name, url, status string
	}{
		// A TLS port responds to plain HTTP with 400 Bad Request.
		{"TLS port over http", strings.Replace(tlsServer.URL, "https://", "http://", 1),
			"HTTP 400 Bad Request"},
		{"web page", webServer.URL, "HTTP 200 OK, content type text/html"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.url, "", "get", "devices")
			if r.code != 1 {
				t.Errorf("exit code = %d, want 1", r.code)
			}
			want := "list devices: the server at " + tt.url + " did not respond as a Fleetplane API"
			for _, want := range []string{want, tt.status, "check the port and the scheme"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "internal") {
				t.Errorf("stderr reports an internal error:\n%s", r.stderr)
			}
		})
	}
}

func TestInvalidServerURL(t *testing.T) {
	tests := []struct {
		server, want string
	}{
		{"notaurl", `invalid --server "notaurl": missing scheme; use a URL such as ` +
			defaultServer},
		{"localhost:7080", `invalid --server "localhost:7080": missing scheme`},
		{"ftp://127.0.0.1", `unsupported scheme "ftp"`},
		{"http://", "missing host"},
	}
	for _, tt := range tests {
		t.Run(tt.server, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"--server", tt.server, "get", "devices"},
				strings.NewReader(""), &stdout, &stderr, func(string) string { return "" })
			if code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.want)
			}
			if strings.Contains(stderr.String(), "grpc-go") {
				t.Errorf("stderr mentions grpc-go: %q", stderr.String())
			}
		})
	}
}

func TestServerUnknownAuthority(t *testing.T) {
	tlsServer := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsServer.Close)
	r := runCLI(t, tlsServer.URL, "", "get", "devices")
	if r.code != 1 {
		t.Errorf("exit code = %d, want 1", r.code)
	}
	for _, want := range []string{"certificate from an unknown authority", "operator API"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}
