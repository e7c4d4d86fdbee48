package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// memory is a process's resident set size and Go heap, in bytes.
type memory struct {
	rss  int64
	heap int64
}

// perAgent returns the growth from base to m divided by n, in bytes.
func (m memory) perAgent(base memory, n int) (rss, heap float64) {
	return float64(m.rss-base.rss) / float64(n), float64(m.heap-base.heap) / float64(n)
}

// selfMemory returns this process's RSS and its heap in use after a garbage collection.
func selfMemory() (memory, error) {
	runtime.GC()
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	rss, err := readRSS(os.Getpid())
	if err != nil {
		return memory{}, err
	}
	return memory{rss: rss, heap: int64(stats.HeapInuse)}, nil
}

// readRSS returns the VmRSS of process pid from /proc, in bytes.
func readRSS(pid int) (int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	return parseRSS(string(data))
}

func parseRSS(status string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q is not in kB", line)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", line, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line in /proc status")
}

// summary describes a set of per-device latencies.
type summary struct {
	count         int
	p50, p99, max time.Duration
}

// summarize returns the nearest-rank p50 and p99 and the maximum of latencies.
func summarize(latencies []time.Duration) summary {
	if len(latencies) == 0 {
		return summary{}
	}
	sorted := slices.Clone(latencies)
	slices.Sort(sorted)
	return summary{
		count: len(sorted),
		p50:   percentile(sorted, 50),
		p99:   percentile(sorted, 99),
		max:   sorted[len(sorted)-1],
	}
}

// percentile returns the nearest-rank p-th percentile of sorted, which must not be empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

func (s summary) String() string {
	return fmt.Sprintf("%d devices, p50 %s, p99 %s, max %s",
		s.count, roundMillis(s.p50), roundMillis(s.p99), roundMillis(s.max))
}

func roundMillis(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// raiseOpenFileLimit sets the soft RLIMIT_NOFILE to the hard limit and returns it. Each agent
// holds one TLS connection; the server process started by this program inherits the limit.
func raiseOpenFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read open file limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise open file limit to %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}

// poll calls check every interval until it reports done, returns an error, or timeout passes.
func poll(
	ctx context.Context,
	timeout, interval time.Duration,
	what string,
	check func() (bool, error),
) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

func mib(bytes float64) string { return fmt.Sprintf("%.1f MiB", bytes/(1<<20)) }
func kib(bytes float64) string { return fmt.Sprintf("%.1f KiB", bytes/(1<<10)) }
