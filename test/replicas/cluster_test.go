package replicas

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	"github.com/fleetplane/fleetplane/client"
	"github.com/fleetplane/fleetplane/dispatcher"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/internal/pgtest"
)

// leaseDuration is the replicas' shard lease time, short so that failover tests end quickly.
const leaseDuration = 3 * time.Second

// shardCount is the PostgreSQL store's default number of task queue shards.
const shardCount = 64

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetplane-replicas-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "fleetplane")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/fleetplane")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build fleetplane: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// replicaProcess is one `fleetplane serve` process.
type replicaProcess struct {
	id       string
	apiURL   string
	agentURL string
	peerAddr string
	api      *client.Client
	cmd      *exec.Cmd
	log      *syncBuffer
	done     chan struct{}
}

// cluster is a set of replicas sharing one database and one CA directory.
type cluster struct {
	t        testing.TB
	dsn      string
	pkiDir   string
	replicas []*replicaProcess
}

func newCluster(t testing.TB, n int) *cluster {
	t.Helper()
	pg := pgtest.Start(t)
	c := &cluster{t: t, dsn: pg.NewDatabase(t), pkiDir: t.TempDir()}
	t.Cleanup(c.stopAll)
	// The first replica creates the schema and the CA; the others start once it serves.
	c.start("r1")
	for i := 2; i <= n; i++ {
		c.start(fmt.Sprintf("r%d", i))
	}
	return c
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs a replica process and waits until its API lists it as a member.
func (c *cluster) start(id string) *replicaProcess {
	t := c.t
	t.Helper()
	apiAddr, agentAddr, peerAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	r := &replicaProcess{
		id: id, apiURL: "http://" + apiAddr, agentURL: "https://" + agentAddr, peerAddr: peerAddr,
		log: &syncBuffer{}, done: make(chan struct{}),
	}
	r.api = client.New(r.apiURL)
	r.cmd = exec.Command(binary, "serve", "--database", c.dsn, "--replica-id", id,
		"--listen", apiAddr, "--agent-listen", agentAddr, "--peer-listen", peerAddr,
		"--data-dir", t.TempDir(), "--pki-dir", c.pkiDir,
		"--lease-duration", leaseDuration.String())
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start replica %s: %v", id, err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	c.replicas = append(c.replicas, r)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of replica %s:\n%s", id, r.log.String())
		}
	})
	waitFor(t, 30*time.Second, "replica "+id+" to join", func() (bool, string) {
		owned := c.leases(r)[id]
		return owned > 0, fmt.Sprintf("replica %s holds %d shards", id, owned)
	})
	// Other replicas send nudges to the advertised address, which must be the peer service's.
	if addr := c.addresses(r)[id]; addr != peerAddr {
		t.Errorf("replica %s advertises %q; want its peer address %q", id, addr, peerAddr)
	}
	return r
}

// addresses returns the advertised address of each member, as read through r's API.
func (c *cluster) addresses(r *replicaProcess) map[string]string {
	resp, err := r.api.Replicas.ListReplicas(context.Background(),
		connect.NewRequest(&fleetplanev1.ListReplicasRequest{}))
	if err != nil {
		return nil
	}
	addrs := map[string]string{}
	for _, rep := range resp.Msg.GetReplicas() {
		addrs[rep.GetId()] = rep.GetAddress()
	}
	return addrs
}

// leases returns the number of shards each replica holds, as read through r's API.
func (c *cluster) leases(r *replicaProcess) map[string]int {
	owned := map[string]int{}
	for _, owner := range c.owners(r) {
		owned[owner]++
	}
	return owned
}

// owners maps each leased shard to the replica that holds it, as read through r's API.
func (c *cluster) owners(r *replicaProcess) map[int]string {
	resp, err := r.api.Replicas.ListReplicas(context.Background(),
		connect.NewRequest(&fleetplanev1.ListReplicasRequest{}))
	if err != nil {
		return nil
	}
	owners := map[int]string{}
	for _, rep := range resp.Msg.GetReplicas() {
		for _, l := range rep.GetLeases() {
			owners[int(l.GetShard())] = rep.GetId()
		}
	}
	return owners
}

// waitSettled waits until the shard leases match the rendezvous assignment over the running
// replicas, and returns the owner of each shard.
func (c *cluster) waitSettled(t testing.TB) map[int]string {
	t.Helper()
	var ids []string
	for _, r := range c.replicas {
		select {
		case <-r.done:
		default:
			ids = append(ids, r.id)
		}
	}
	want := dispatcher.Assign(shardCount, ids)
	var got map[int]string
	waitFor(t, leaseDuration+10*time.Second, "the shard leases to settle", func() (bool, string) {
		got = c.owners(c.replicas[0])
		return cmp.Equal(got, want), cmp.Diff(want, got)
	})
	return got
}

// sessionsPerReplica counts the session registry's streams of each replica, as read through
// r's API in pages of five.
func (c *cluster) sessionsPerReplica(r *replicaProcess) map[string]int {
	counts := map[string]int{}
	req := &fleetplanev1.ListAgentSessionsRequest{PageSize: 5}
	for {
		resp, err := r.api.Replicas.ListAgentSessions(context.Background(), connect.NewRequest(req))
		if err != nil {
			return nil
		}
		for _, s := range resp.Msg.GetSessions() {
			counts[s.GetReplica()]++
		}
		if resp.Msg.GetNextPageToken() == "" {
			return counts
		}
		req.PageToken = resp.Msg.GetNextPageToken()
	}
}

// connectedAgents returns the connected_agents figure of each replica's membership row.
func (c *cluster) connectedAgents(r *replicaProcess) map[string]int64 {
	resp, err := r.api.Replicas.ListReplicas(context.Background(),
		connect.NewRequest(&fleetplanev1.ListReplicasRequest{}))
	if err != nil {
		return nil
	}
	counts := map[string]int64{}
	for _, rep := range resp.Msg.GetReplicas() {
		counts[rep.GetId()] = rep.GetConnectedAgents()
	}
	return counts
}

// metric returns the sum of every sample of the named metric on r's /metrics page, and whether
// the page has the metric at all.
func (r *replicaProcess) metric(t testing.TB, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(r.apiURL + "/metrics")
	if err != nil {
		t.Fatalf("get metrics of replica %s: %v", r.id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read metrics of replica %s: %v", r.id, err)
	}
	sum, found := 0.0, false
	for _, line := range strings.Split(string(body), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 2 || (fields[0] != name && !strings.HasPrefix(fields[0], name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			t.Fatalf("metric line %q of replica %s: %v", line, r.id, err)
		}
		sum, found = sum+v, true
	}
	return sum, found
}

func (c *cluster) agentURLs(first int) string {
	urls := ""
	for i := range c.replicas {
		r := c.replicas[(first+i)%len(c.replicas)]
		if urls != "" {
			urls += ","
		}
		urls += r.agentURL
	}
	return urls
}

func (c *cluster) caPEM() []byte {
	c.t.Helper()
	data, err := os.ReadFile(filepath.Join(c.pkiDir, "ca.crt"))
	if err != nil {
		c.t.Fatal(err)
	}
	return data
}

// kill sends sig to the replica; for SIGKILL it also waits for the process to end.
func (r *replicaProcess) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to replica %s: %v", sig, r.id, err)
	}
	if sig == syscall.SIGKILL {
		<-r.done
	}
}

func (c *cluster) stopAll() {
	for _, r := range c.replicas {
		select {
		case <-r.done:
			continue
		default:
		}
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	}
}

// waitFor polls check every 100 ms until it returns true or timeout passes. check also returns
// a description of the state, which the failure message shows.
func waitFor(t testing.TB, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not a wait for a result
	}
}
