package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// apiTransport rejects HTTP responses that no Connect or gRPC server would send, such as the
// "400 Bad Request" that a TLS port returns to plain HTTP. Without it the Connect client turns
// such a response into a code like "internal", which hides that --server names the wrong
// server, port or scheme.
type apiTransport struct {
	next http.RoundTripper
}

func (t apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode == http.StatusNotFound || isAPIContentType(resp.Header) {
		// A Fleetplane server of another version responds to an unknown call with a plain
		// 404, which the Connect client reports as "unimplemented", so 404 passes through.
		return resp, err
	}
	resp.Body.Close()
	return nil, &notAPIError{status: resp.Status, contentType: resp.Header.Get("Content-Type")}
}

// isAPIContentType reports whether a response has a content type of the Connect or gRPC
// protocol: application/proto or application/json for unary calls and their errors,
// application/connect+... for streams and application/grpc... for gRPC.
func isAPIContentType(h http.Header) bool {
	contentType := strings.ToLower(h.Get("Content-Type"))
	for _, prefix := range []string{"application/proto", "application/json",
		"application/connect+", "application/grpc"} {
		if strings.HasPrefix(contentType, prefix) {
			return true
		}
	}
	return false
}

// notAPIError is a response from something other than a Fleetplane API server.
type notAPIError struct {
	status, contentType string
}

func (e *notAPIError) Error() string {
	if e.contentType == "" {
		return "HTTP " + e.status
	}
	return fmt.Sprintf("HTTP %s, content type %s", e.status, e.contentType)
}

// checkServerURL returns an error when server is not an http:// or https:// URL with a host.
func checkServerURL(server string) error {
	if !strings.Contains(server, "://") {
		// Checked first, because url.Parse reads "localhost:7080" as scheme "localhost".
		return fmt.Errorf("invalid --server %q: missing scheme; use a URL such as %s",
			server, defaultServer)
	}
	u, err := url.Parse(server)
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err // the bare reason, without a second copy of the URL
	}
	switch {
	case err != nil:
		return fmt.Errorf("invalid --server %q: %v", server, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("invalid --server %q: unsupported scheme %q; use http:// or https://",
			server, u.Scheme)
	case u.Host == "":
		return fmt.Errorf("invalid --server %q: missing host; use a URL such as %s",
			server, defaultServer)
	}
	return nil
}
