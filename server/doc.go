// Package server serves the Fleetplane API: Connect, gRPC and gRPC-Web on one port, with gRPC
// health checking, server reflection (v1 and v1alpha) and Prometheus metrics at /metrics.
//
// # Request path
//
// Every RPC passes through the same handler options. Connect first rejects request messages
// over MaxRequestBytes, and its JSON codec rejects unknown fields. Then the interceptors run,
// outermost first:
//
//  1. telemetry: a server span and the rpc.server.duration histogram, which see the final
//     status code;
//  2. error mapping (toConnectError), so handlers return plain errors;
//  3. debug logging of procedure, protocol, code and duration, never of message bodies;
//  4. panic recovery: a panicking handler returns INTERNAL and the process keeps running.
//
// A handler then validates the request (package internal/validation names the JSON path of a
// bad field, for example fleet.spec.template.spec.config[0].inline[1].path), and runs the read
// or write in one store.InTx transaction. Each write also records an Event in that transaction,
// so an event exists if and only if the write committed. Updates read the stored object in the
// same transaction to keep what clients may not set (owner, annotations under fleetplane.dev/,
// status, generation, creation time) and to compare and swap on its resource version when the
// request carries none. The store's change hook enqueues the tasks that a write triggers in the
// same transaction.
//
// One generic type, resource[T], implements Get, List, Create, Update, Delete, DeleteAll and
// Watch for every kind. The per-service types only translate messages and add the rules of
// their kind. A device owned by a fleet rejects spec changes. Repository credentials are
// write-only: every response and watch event has them cleared, and an update that leaves one
// empty keeps the stored value. Enrollment approval signs the CSR and creates the device.
//
// # Error mapping
//
// toConnectError maps errors with errors.Is and errors.As, in this order: *connect.Error as
// is; validation errors and store.ErrInvalidArgument to INVALID_ARGUMENT; store.ErrNotFound to
// NOT_FOUND; store.ErrAlreadyExists to ALREADY_EXISTS; store.ErrConflict to ABORTED with a
// message telling the client to get the object again; context cancellation and deadline to
// CANCELED and DEADLINE_EXCEEDED. Anything else is logged at error level with the procedure
// name and sent as INTERNAL with a generic message, so internal text never reaches clients.
//
// # Watch
//
// A watch streams change-log entries after the requested resource version, filtered by the
// selectors. It wakes on Store.Subscribe for local commits, polls once a second for commits of
// other replicas, and sends a BOOKMARK every 30 seconds. A version older than the change log
// keeps is OUT_OF_RANGE, and the client must list again.
package server
