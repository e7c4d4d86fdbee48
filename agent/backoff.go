package agent

import (
	"math/rand/v2"
	"time"
)

// backoff computes jittered exponential delays between min and max. Each delay is drawn from
// [d/2, d], where d doubles with every attempt up to max, and is never below min.
type backoff struct {
	min, max time.Duration
	attempt  int
	// random returns a number in [0, 1); tests replace it.
	random func() float64
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, random: rand.Float64}
}

// next returns the delay before the next attempt and advances the attempt count.
func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.attempt && d < b.max; i++ {
		d *= 2
	}
	if d > b.max {
		d = b.max
	}
	if d < b.max {
		b.attempt++
	}
	return b.jitter(d)
}

// maxDelay returns a jittered delay at the maximum, for failures that retrying soon cannot fix.
func (b *backoff) maxDelay() time.Duration {
	return b.jitter(b.max)
}

func (b *backoff) reset() {
	b.attempt = 0
}

func (b *backoff) jitter(d time.Duration) time.Duration {
	j := d/2 + time.Duration(b.random()*float64(d/2))
	if j < b.min {
		j = b.min
	}
	return j
}
