// Package agent is the Fleetplane device agent: it enrolls the device, holds the long-lived
// stream to the server, applies rendered specs through an Applier and reports status.
//
// # States
//
// An Agent moves through these states, and a restart resumes at the one it reached:
//
//  1. Unenrolled: the data directory has no key. The agent generates an ECDSA P-256 key
//     (device.key, mode 0600) and picks its name, which it keeps in identity.json.
//  2. Submitted: the agent called Enroll with a CSR for its name and recorded that in
//     identity.json. It polls GetEnrollmentCertificate with jittered exponential backoff. A
//     request the server no longer has (NOT_FOUND) is submitted again; Denied ends Run with
//     ErrEnrollmentDenied.
//  3. Enrolled: device.crt and ca.crt hold the client certificate and the server's CA. From
//     here on every call uses mutual TLS.
//  4. Streaming: the agent opens Stream, sends hello with the highest version it has applied
//     or rejected, and then handles specs one at a time. It acknowledges or rejects each new
//     version and re-acknowledges its current version when the server sends an older one. It
//     sends a keepalive every 15 s and a status report after each ack or reject and every status
//     interval. A stream that brings no message for 45 s counts as dead.
//  5. Waiting: after a stream ends the agent waits with jittered exponential backoff (1 s to
//     60 s, reset once a stream stayed up for a minute) and goes back to Streaming. When the
//     server answers NOT_FOUND, PERMISSION_DENIED or UNAUTHENTICATED the agent waits the
//     maximum delay every time, because retrying sooner cannot help.
//
// The device keeps running its last applied spec in every state.
//
// # Persistence
//
// Identity files live in the data directory and are replaced atomically. The applied and
// desired specs are the Applier's business: apply.Manager keeps them in spec-state.json and
// finishes or undoes an interrupted apply in Recover, which Run calls before it connects. With
// an empty data directory (the simulator) the identity lives in memory only.
//
// # Concurrency
//
// Run owns all state and handles one stream at a time, from one goroutine plus a reader
// goroutine per stream that only forwards received messages. Snapshot may be called from any
// goroutine.
package agent
