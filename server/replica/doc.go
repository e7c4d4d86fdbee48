// Package replica connects the server replicas that share one database. Each replica serves
// PeerService (plain gRPC) on its peer address, which it advertises in its membership row, and
// sends two kinds of nudges to the other live replicas:
//
//   - after a local commit that enqueued tasks, WakeShards, so the replica that holds the
//     tasks' shard claims them at once instead of at its next poll;
//   - after rendering devices, NotifyDevices, so the replica that holds a device's agent stream
//     sends the new spec at once instead of at its next sweep. The session registry in the
//     store, which each replica's agent port writes in batches, names that replica. A device
//     without a live replica in the registry goes to every live replica.
//
// Nudges are hints. A lost one delays work until the receiver's fallback (the dispatcher's
// poll, one second by default, or the agent port's sweep, 30 seconds by default) and never
// loses it. Outgoing nudges are batched: a Peers value collects devices and wake-ups and sends
// at most one call per peer and kind every flush interval, from one goroutine.
//
// NOTE: peer traffic is plaintext gRPC. Production deployments need mutual TLS between replicas.
package replica
