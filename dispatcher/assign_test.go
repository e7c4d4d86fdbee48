package dispatcher

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func replicaNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("replica-%d", i)
	}
	return names
}

func TestAssignCoversEveryShard(t *testing.T) {
	names := replicaNames(5)
	got := Assign(64, names)
	if len(got) != 64 {
		t.Fatalf("Assign(64, 5 replicas) has %d shards, want 64", len(got))
	}
	for shard := range 64 {
		owner, ok := got[shard]
		if !ok {
			t.Errorf("shard %d has no owner", shard)
			continue
		}
		if !slices.Contains(names, owner) {
			t.Errorf("shard %d owner %q is not a listed replica", shard, owner)
		}
	}
}

func TestAssignEmpty(t *testing.T) {
	if got := Assign(64, nil); len(got) != 0 {
		t.Errorf("Assign(64, nil) = %v, want empty", got)
	}
	if got := Assign(0, []string{"a"}); len(got) != 0 {
		t.Errorf("Assign(0, [a]) = %v, want empty", got)
	}
}

// TestAssignBalance bounds the busiest replica's load by twice the mean shards per replica plus
// 4. Rendezvous hashing has no virtual nodes, so the load per replica is roughly binomial and the
// bound is loose.
func TestAssignBalance(t *testing.T) {
	for _, shards := range []int{64, 256} {
		for n := 3; n <= 50; n++ {
			load := map[string]int{}
			for _, owner := range Assign(shards, replicaNames(n)) {
				load[owner]++
			}
			mean := float64(shards) / float64(n)
			maxLoad := 0
			for _, l := range load {
				maxLoad = max(maxLoad, l)
			}
			if bound := 2*mean + 4; float64(maxLoad) > bound {
				t.Errorf("%d shards over %d replicas: max load %d, want at most %.1f",
					shards, n, maxLoad, bound)
			}
			if n <= shards/8 && len(load) != n {
				t.Errorf("%d shards over %d replicas: only %d replicas got shards",
					shards, n, len(load))
			}
		}
	}
}

func TestAssignJoinMovesFewShards(t *testing.T) {
	for n := 3; n <= 20; n++ {
		names := replicaNames(n + 1)
		before := Assign(256, names[:n])
		after := Assign(256, names)
		joined := names[n]
		moved := 0
		for shard, owner := range after {
			if owner == before[shard] {
				continue
			}
			moved++
			if owner != joined {
				t.Errorf("n=%d: shard %d moved from %s to %s, not to the joining replica",
					n, shard, before[shard], owner)
			}
		}
		// The expected share is 256/(n+1); allow twice that plus a slack for small n.
		if limit := 2*256/(n+1) + 4; moved > limit {
			t.Errorf("n=%d: %d shards moved on join, want at most %d", n, moved, limit)
		}
	}
}

func TestAssignLeaveMovesOnlyItsShards(t *testing.T) {
	names := replicaNames(10)
	before := Assign(256, names)
	left := names[4]
	after := Assign(256, slices.Delete(slices.Clone(names), 4, 5))
	for shard, owner := range after {
		if before[shard] != left && owner != before[shard] {
			t.Errorf("shard %d moved from %s to %s, but its owner stayed", shard,
				before[shard], owner)
		}
		if owner == left {
			t.Errorf("shard %d still assigned to the departed replica", shard)
		}
	}
}

func TestAssignIgnoresOrderAndDuplicates(t *testing.T) {
	names := replicaNames(12)
	want := Assign(128, names)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := slices.Clone(names)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		shuffled = append(shuffled, shuffled[0])
		if diff := cmp.Diff(want, Assign(128, shuffled)); diff != "" {
			t.Fatalf("Assign depends on input order (-want +got):\n%s", diff)
		}
	}
}

func FuzzAssign(f *testing.F) {
	f.Add("a,b,c", 64)
	f.Add("", 8)
	f.Add("x,x,,y", 256)
	f.Fuzz(func(t *testing.T, list string, shards int) {
		shards %= 1024
		var names []string
		start := 0
		for i := 0; i <= len(list); i++ {
			if i == len(list) || list[i] == ',' {
				names = append(names, list[start:i])
				start = i + 1
			}
		}
		got := Assign(shards, names)
		if shards <= 0 || len(names) == 0 {
			if len(got) != 0 {
				t.Fatalf("Assign(%d, %q) = %v, want empty", shards, names, got)
			}
			return
		}
		if len(got) != shards {
			t.Fatalf("Assign(%d, %q) has %d shards", shards, names, len(got))
		}
		reversed := slices.Clone(names)
		slices.Reverse(reversed)
		if diff := cmp.Diff(got, Assign(shards, reversed)); diff != "" {
			t.Fatalf("Assign depends on input order (-first +reversed):\n%s", diff)
		}
		for shard, owner := range got {
			if !slices.Contains(names, owner) {
				t.Fatalf("shard %d owner %q is not in %q", shard, owner, names)
			}
		}
	})
}

func TestBackoffBounds(t *testing.T) {
	base, maxDelay := 10*time.Millisecond, 300*time.Millisecond
	for attempt := 1; attempt <= 12; attempt++ {
		ceiling := min(base<<(attempt-1), maxDelay)
		for range 200 {
			d := backoff(attempt, base, maxDelay)
			if d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [0, %v]", attempt, d, ceiling)
			}
		}
	}
}

func TestPermanentWrapping(t *testing.T) {
	inner := errors.New("bad template")
	err := fmt.Errorf("render: %w", Permanent(inner))
	if !isPermanent(err) {
		t.Error("isPermanent(wrapped Permanent) = false, want true")
	}
	if !errors.Is(err, inner) {
		t.Error("errors.Is(Permanent(inner), inner) = false, want true")
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	if isPermanent(inner) {
		t.Error("isPermanent(plain error) = true, want false")
	}
}
