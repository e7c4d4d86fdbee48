package dispatcher

import (
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"
)

// Assign maps shards 0..shardCount-1 to replicas by rendezvous (highest random weight) hashing:
// each shard goes to the replica with the highest hash of (replica, shard). The result depends
// only on the set of replica names, so every replica computes the same map, and a replica that
// joins or leaves moves only the shards it wins or held. Duplicate names count once. It returns
// an empty map when replicas is empty or shardCount is not positive.
func Assign(shardCount int, replicas []string) map[int]string {
	names := uniqueSorted(replicas)
	out := make(map[int]string, max(shardCount, 0))
	if len(names) == 0 {
		return out
	}
	for shard := 0; shard < shardCount; shard++ {
		var best string
		var bestWeight uint64
		for i, name := range names {
			w := rendezvousWeight(name, shard)
			if i == 0 || w > bestWeight {
				best, bestWeight = name, w
			}
		}
		out[shard] = best
	}
	return out
}

// uniqueSorted returns the distinct names in ascending order, so that ties between equal weights
// break the same way whatever the input order.
func uniqueSorted(names []string) []string {
	out := append([]string(nil), names...)
	sort.Strings(out)
	n := 0
	for i, name := range out {
		if i > 0 && name == out[n-1] {
			continue
		}
		out[n] = name
		n++
	}
	return out[:n]
}

// rendezvousWeight returns FNV-1a (64 bit) of replica, a zero byte and the shard number, passed
// through a 64-bit finalizer because FNV alone mixes the last bytes poorly.
func rendezvousWeight(replica string, shard int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(replica))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, int64(shard), 10))
	return mix64(h.Sum64())
}

// mix64 is the finalizer of the SplitMix64 generator.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// backoff returns the delay before retry number attempt (1 for the first retry): a uniform
// random duration in [0, min(maxDelay, base*2^(attempt-1))] ("full jitter").
func backoff(attempt int, base, maxDelay time.Duration) time.Duration {
	ceiling := base
	for i := 1; i < attempt && ceiling < maxDelay; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, maxDelay)
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps an error that retrying cannot fix: a handler that returns it makes its task
// Failed at once. Permanent(nil) returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
