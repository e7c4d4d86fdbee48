package agent

import (
	"testing"
	"time"
)

func TestBackoffGrowsToMax(t *testing.T) {
	b := newBackoff(time.Second, 60*time.Second)
	b.random = func() float64 { return 0.999999 }

	var got []time.Duration
	for range 8 {
		got = append(got, b.next().Round(time.Second))
	}

	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Errorf("delay %d = %v, want %v", i, got[i], want[i]*time.Second)
		}
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	b := newBackoff(time.Second, 30*time.Second)
	b.random = func() float64 { return 0 }

	if got := b.next(); got != time.Second {
		t.Errorf("first delay with zero jitter = %v, want the 1s minimum", got)
	}
	if got := b.next(); got != time.Second {
		t.Errorf("second delay with zero jitter = %v, want 1s (half of 2s)", got)
	}
	if got := b.maxDelay(); got != 15*time.Second {
		t.Errorf("maxDelay with zero jitter = %v, want 15s", got)
	}
}

func TestBackoffReset(t *testing.T) {
	b := newBackoff(time.Second, time.Minute)
	b.random = func() float64 { return 0.999999 }
	for range 5 {
		b.next()
	}

	b.reset()

	if got := b.next().Round(time.Second); got != time.Second {
		t.Errorf("delay after reset = %v, want 1s", got)
	}
}
