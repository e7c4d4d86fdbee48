package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// serverProcess runs `fleetplane serve` as a child process on fixed loopback ports, so that
// its memory is measured apart from the simulator's and it can be killed and started again on
// the same ports and data directory.
type serverProcess struct {
	binary    string
	flags     []string
	dataDir   string
	logPath   string
	apiAddr   string
	agentAddr string

	cmd  *exec.Cmd
	done chan error
	// liveHeap is the heap marked live by the server's latest garbage collection, in bytes,
	// read from the runtime's gctrace lines on the server's standard error.
	liveHeap atomic.Int64
}

func newServerProcess(binary string, flags []string, dir string) (*serverProcess, error) {
	apiAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	agentAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	return &serverProcess{
		binary:    binary,
		flags:     flags,
		dataDir:   filepath.Join(dir, "server"),
		logPath:   filepath.Join(dir, "server.log"),
		apiAddr:   apiAddr,
		agentAddr: agentAddr,
	}, nil
}

func (s *serverProcess) apiURL() string   { return "http://" + s.apiAddr }
func (s *serverProcess) agentURL() string { return "https://" + s.agentAddr }
func (s *serverProcess) caFile() string   { return filepath.Join(s.dataDir, "pki", "ca.crt") }

// start starts the server process. GODEBUG=gctrace=1 makes the Go runtime print the heap
// sizes of each garbage collection, because the server's /metrics has no Go memory metrics.
func (s *serverProcess) start() error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	args := append([]string{"serve", "--data-dir", s.dataDir,
		"--listen", s.apiAddr, "--agent-listen", s.agentAddr}, s.flags...)
	cmd := exec.Command(s.binary, args...)
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	cmd.Stdout = logFile
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return fmt.Errorf("server stderr: %w", err)
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s serve: %w", s.binary, err)
	}
	s.liveHeap.Store(0)
	s.cmd = cmd
	s.done = make(chan error, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		s.copyLog(stderr, logFile)
	}()
	go func() {
		<-copied
		logFile.Close()
		s.done <- cmd.Wait()
	}()
	return nil
}

// copyLog writes the server's standard error to the log file and records each gctrace line's
// live heap.
func (s *serverProcess) copyLog(r io.Reader, w io.Writer) {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		line := scanner.Text()
		if heap, ok := parseGCTrace(line); ok {
			s.liveHeap.Store(heap)
		}
		fmt.Fprintln(w, line)
	}
	// Keep reading after a long line, so that the server never blocks on a full pipe.
	_, _ = io.Copy(w, r)
}

// gcTraceHeap matches "A->B->C MB" in a gctrace line; C is the heap marked live.
var gcTraceHeap = regexp.MustCompile(`^gc \d+ @.* (\d+)->(\d+)->(\d+) MB`)

// parseGCTrace returns the live heap in bytes from one GODEBUG=gctrace=1 line.
func parseGCTrace(line string) (int64, bool) {
	m := gcTraceHeap.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	mb, err := strconv.ParseInt(m[3], 10, 64)
	if err != nil {
		return 0, false
	}
	return mb << 20, true
}

// stop sends SIGINT and waits for a graceful shutdown, killing the process after timeout.
func (s *serverProcess) stop(timeout time.Duration) error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.done:
		s.cmd = nil
		return err
	case <-time.After(timeout):
		return s.kill()
	}
}

// kill sends SIGKILL, as a crash would, and waits for the process to exit.
func (s *serverProcess) kill() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Kill()
	err := <-s.done
	s.cmd = nil
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return nil
	}
	return err
}

// waitReady polls the operator API until it answers, the process exits, or timeout passes.
func (s *serverProcess) waitReady(ctx context.Context, api *client.Client, timeout time.Duration) error {
	return poll(ctx, timeout, 100*time.Millisecond, "the server to answer", func() (bool, error) {
		select {
		case err := <-s.done:
			s.done <- err
			return false, fmt.Errorf("server exited (see %s): %v", s.logPath, err)
		default:
		}
		_, err := api.Fleets.ListFleets(ctx, connect.NewRequest(&fleetplanev1.ListFleetsRequest{}))
		return err == nil, nil
	})
}

// memory returns the server's resident set size and live heap in bytes.
func (s *serverProcess) memory() (memory, error) {
	if s.cmd == nil {
		return memory{}, errors.New("server is not running")
	}
	rss, err := readRSS(s.cmd.Process.Pid)
	if err != nil {
		return memory{}, err
	}
	return memory{rss: rss, heap: s.liveHeap.Load()}, nil
}

// connectedAgents reads the fleetplane_agents_connected gauge from the server's /metrics.
func (s *serverProcess) connectedAgents(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.apiURL()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read server metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, fmt.Errorf("read server metrics: %w", err)
	}
	return parseGauge(string(body), "fleetplane_agents_connected")
}

// parseGauge returns the value of an unlabelled metric in Prometheus text format. The
// exporter may add labels such as otel_scope_name, so any label set is accepted.
func parseGauge(text, name string) (int, error) {
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: value %q is not a number", name, fields[len(fields)-1])
		}
		return int(v), nil
	}
	return 0, fmt.Errorf("metric %s not found in /metrics", name)
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
