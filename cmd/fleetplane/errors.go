package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"connectrpc.com/connect"
	"github.com/fleetplane/fleetplane/client/resourcefile"
)

// apiError rewrites err from a call to the server into a message that states what failed and
// what to do. what names the action, such as `get fleet "edge"`.
func (a *app) apiError(what string, err error) error {
	if err == nil {
		return nil
	}
	if urlErr := checkServerURL(a.server); urlErr != nil {
		return &unreachableError{urlErr.Error()}
	}
	if unreachable(err) {
		return &unreachableError{fmt.Sprintf("cannot reach the Fleetplane server at %s: %s; "+
			`start it with "fleetplane serve" or set --server`, a.server, networkReason(err))}
	}
	var unknownAuthority x509.UnknownAuthorityError
	if errors.As(err, &unknownAuthority) {
		return &unreachableError{fmt.Sprintf("%s: the server at %s presented a certificate "+
			"from an unknown authority; if that is the agent port, point --server at the "+
			"operator API instead (fleetplane serve --listen, http://127.0.0.1:7080 by default)",
			what, a.server)}
	}
	var notAPI *notAPIError
	if errors.As(err, &notAPI) {
		return &unreachableError{fmt.Sprintf("%s: the server at %s did not respond as a "+
			"Fleetplane API (%s); check the port and the scheme, http:// or https://, of --server",
			what, a.server, notAPI)}
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch ce.Code() {
	case connect.CodeResourceExhausted:
		if connect.IsWireError(err) && strings.Contains(ce.Message(), "larger than configured max") {
			return fmt.Errorf("%s: the request is larger than the server's limit of %d MiB; "+
				"move large inline content into a repository and refer to it with gitRef or "+
				"httpRef", what, resourcefile.MaxRequestBytes>>20)
		}
	case connect.CodeNotFound:
		return fmt.Errorf("%s: not found", what)
	case connect.CodeInvalidArgument:
		return fmt.Errorf("%s: invalid: %s", what, ce.Message())
	case connect.CodeAborted:
		return fmt.Errorf("%s: conflict: %s", what, ce.Message())
	case connect.CodeUnimplemented:
		return fmt.Errorf("%s: the server at %s does not offer this call; check that "+
			"--server points at a Fleetplane server of this version", what, a.server)
	}
	return fmt.Errorf("%s: %s: %s", what, ce.Code(), ce.Message())
}

// unreachableError reports that the server could not be reached at all, so further calls
// are pointless.
type unreachableError struct{ message string }

func (e *unreachableError) Error() string { return e.message }

func unreachable(err error) bool {
	var reachErr *unreachableError
	if errors.As(err, &reachErr) {
		return true
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &opErr) ||
		errors.As(err, &dnsErr)
}

func networkReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "unknown host " + dnsErr.Name
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Err.Error()
	}
	return err.Error()
}

// isCode reports whether err is a Connect error with code.
func isCode(err error, code connect.Code) bool {
	return connect.CodeOf(err) == code
}
