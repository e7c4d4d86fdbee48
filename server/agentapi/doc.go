// Package agentapi serves the agent port: AgentService (enrollment and the spec stream) and a
// DeviceService restricted to the calling device. The port runs TLS with the configuration
// from identity.CA.ServerTLSConfig. Enroll and GetEnrollmentCertificate need no client
// certificate. Every other call needs the device certificate that approval issued, and the
// certificate's common name is the only device the call may read or change.
//
// # Enrollment
//
// Enroll stores an EnrollmentRequest named after the device, after checking that the CSR
// parses, is signed by its key and has the device name as common name. Submitting the same key
// again returns the request's state, and another key for the same name gets ALREADY_EXISTS.
// GetEnrollmentCertificate takes the hex SHA-256 of the CSR's DER public key as proof of
// ownership and returns Pending, Approved (with the certificate and the CA certificate once the
// operator API stored them) or Denied. The decision is the request's "Approved" condition.
//
// # Stream protocol
//
//  1. The agent sends hello with the highest rendered version it has applied or rejected. A
//     first message of another kind ends the stream with INVALID_ARGUMENT, a device that is
//     not in the store with NOT_FOUND, and a stream over the admission rate with UNAVAILABLE.
//     Admission uses a token bucket of this package (AdmitRate, AdmitBurst).
//  2. The server sends the device's rendered spec only when its version is greater than the
//     agent's and is not the version the agent last rejected. At most one version is
//     outstanding. When the agent acknowledges or rejects it and a newer version exists, only
//     the newest is sent, so intermediate versions are skipped.
//  3. An ack sets status.config.rendered_version and status.updated (UpToDate when it is the
//     latest rendered version). A reject sets the SpecRejected condition ("version N: error"),
//     sets status.updated to OutOfDate and records a Warning event. The condition survives
//     reconnects, so version N is never sent again. An ack of a newer version removes it.
//  4. A status message replaces the fields the agent owns: summary, system info, resources,
//     applications, and the conditions of types the server does not set. The server keeps its
//     own fields.
//  5. Both sides send keepalives every KeepaliveInterval. The server closes a stream that
//     brought no message for three intervals.
//  6. Hello and every later message refresh the device's last-seen time in memory. The flush
//     loop writes the times in one SetLastSeen call, which leaves resource versions alone.
//  7. A second stream for the same device replaces the first, which ends with ABORTED.
//
// # Push path
//
// The session registry maps each device to its stream. Notify(device), called by the render
// task after a commit, signals that stream through a channel of capacity one and returns at
// once. The stream's goroutine then reads the rendered spec and sends it if rule 2 allows. The
// sweep loop reads the latest rendered version of every connected device, in batches of 500
// per transaction, and signals each stream that has not yet seen that version. This catches
// notifications that were lost or that went to another replica. A connected device that no
// longer exists has its stream ended with NOT_FOUND by the next sweep.
//
// # Concurrency
//
// Each stream has three goroutines:
//   - the handler goroutine runs the session loop. It is the only one that sends, and it owns
//     the protocol state (agent version, outstanding version, rejected version);
//   - a reader forwards hello, ack, reject and keepalive messages to the session loop and puts
//     status reports into a latest-wins slot;
//   - a status writer takes the slot's report and writes it in its own short transaction. A
//     slow write therefore never delays acks, and reports that arrive meanwhile replace each
//     other instead of queueing.
//
// Notify, the sweep and other streams never wait for a stream: they only signal it. A stalled
// agent holds up only its own handler goroutine, inside Send, through HTTP/2 flow control.
//
// NOTE: the idle check runs between sends, so a stream whose agent neither reads nor writes
// stays open while a Send is blocked on flow control, until the connection closes. Specs are
// small, so this needs a client that leaves megabytes unread.
//
// # Metrics
//
// On the global MeterProvider, without per-device attributes: fleetplane_agents_connected,
// fleetplane_agent_render_to_ack_seconds (measured from the time the spec was sent on the
// stream, because the session does not know when the render committed),
// fleetplane_agent_rejected_versions_total and fleetplane_agent_streams_rejected_total by
// reason (unauthenticated, rate_limited, no_hello, unknown_device).
package agentapi
