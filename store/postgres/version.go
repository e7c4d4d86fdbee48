package postgres

import (
	"math/rand/v2"
	"sync"
	"time"
)

// A version is a 63-bit integer: the time part, in microseconds since versionEpoch, shifted
// left by nodeBits, and a node id chosen at random when the Store opens. 51 bits of
// microseconds last until about 2096.
const nodeBits = 12

// versionEpoch is the zero of the time part.
var versionEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// versionClock issues resource versions without a shared counter in the database. Versions
// from one clock strictly increase: when the wall clock has not moved on (or went back), the
// time part is the last one plus one. Two clocks never issue the same version unless they
// drew the same node id, which happens for a given pair with probability 1/4096; the change
// log tolerates such duplicates (see doc.go).
type versionClock struct {
	node int64

	mu   sync.Mutex
	last int64 // time part of the last version issued; guarded by mu
}

// newVersionClock returns a clock with a random node id that issues versions above floor.
func newVersionClock(floor int64) *versionClock {
	return &versionClock{node: rand.Int64N(1 << nodeBits), last: floor >> nodeBits}
}

// next returns a new version above both every version this clock issued and floor, which is
// the version the written object had, so that an object's versions increase even when the
// replicas that write it disagree about the time. A floor ahead of the wall clock moves the
// clock forward.
func (c *versionClock) next(floor int64) int64 {
	now := time.Since(versionEpoch).Microseconds()
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := max(now, c.last+1, floor>>nodeBits+1)
	c.last = ts
	return ts<<nodeBits | c.node
}

// VersionTime returns the wall-clock time encoded in a version issued by this backend. It is
// approximate: a version can run ahead of the clock by the number of versions its process
// issued within the same microseconds, and replicas' clocks differ.
func VersionTime(version int64) time.Time {
	return versionEpoch.Add(time.Duration(version>>nodeBits) * time.Microsecond)
}

// VersionsIn returns the width of a range of versions that spans d of wall-clock time. A
// watcher that re-reads the change log from cursor - VersionsIn(window) receives changes
// that commit up to window late (see doc.go).
func VersionsIn(d time.Duration) int64 {
	return d.Microseconds() << nodeBits
}
