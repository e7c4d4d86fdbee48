package replica

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	peerv1 "github.com/fleetplane/fleetplane/gen/fleetplane/peer/v1"
	"github.com/fleetplane/fleetplane/store"
)

// Defaults of Config.
const (
	DefaultFlushInterval = 20 * time.Millisecond
	// callTimeout bounds one peer call, so a stopped peer delays nothing but its own nudge.
	callTimeout = 2 * time.Second
)

// Config configures a Peers value.
type Config struct {
	Store store.Store
	// ReplicaID is this replica's id in the membership table; calls to it are skipped.
	ReplicaID string
	// LiveAfter is how old a heartbeat may be for its replica to count as live, normally the
	// dispatcher's lease duration.
	LiveAfter time.Duration
	// Wake and Notify apply incoming nudges to this process.
	Wake   func()
	Notify func(device string)
	// FlushInterval is the time between batches of outgoing nudges; zero means
	// DefaultFlushInterval.
	FlushInterval time.Duration
	Logger        *slog.Logger
}

// Peers sends nudges to the other replicas and serves the ones they send.
type Peers struct {
	peerv1.UnimplementedPeerServiceServer

	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	devices map[string]bool
	wake    bool
	conns   map[string]*grpc.ClientConn // by address
}

// New returns a Peers value that does nothing until Run.
func New(cfg Config) (*Peers, error) {
	if cfg.Store == nil || cfg.Wake == nil || cfg.Notify == nil {
		return nil, fmt.Errorf("replica peers config: Store, Wake and Notify are required")
	}
	if cfg.LiveAfter <= 0 {
		return nil, fmt.Errorf("replica peers config: LiveAfter %v must be positive", cfg.LiveAfter)
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Peers{
		cfg: cfg, log: log, kick: make(chan struct{}, 1),
		devices: map[string]bool{}, conns: map[string]*grpc.ClientConn{},
	}, nil
}

// WakeShards serves PeerService.WakeShards.
func (p *Peers) WakeShards(context.Context, *peerv1.WakeShardsRequest) (*peerv1.WakeShardsResponse, error) {
	p.cfg.Wake()
	return &peerv1.WakeShardsResponse{}, nil
}

// NotifyDevices serves PeerService.NotifyDevices.
func (p *Peers) NotifyDevices(_ context.Context, req *peerv1.NotifyDevicesRequest) (*peerv1.NotifyDevicesResponse, error) {
	for _, d := range req.GetDevices() {
		p.cfg.Notify(d)
	}
	return &peerv1.NotifyDevicesResponse{}, nil
}

// Notify signals the device's stream in this process and queues a NotifyDevices call to the
// other replicas. It never blocks.
func (p *Peers) Notify(device string) {
	p.cfg.Notify(device)
	p.mu.Lock()
	p.devices[device] = true
	p.mu.Unlock()
	p.signal()
}

// WakeOthers queues a WakeShards call to the other replicas. It never blocks.
func (p *Peers) WakeOthers() {
	p.mu.Lock()
	p.wake = true
	p.mu.Unlock()
	p.signal()
}

func (p *Peers) signal() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Serve serves PeerService on ln until ctx ends.
func (p *Peers) Serve(ctx context.Context, ln net.Listener) error {
	srv := grpc.NewServer()
	peerv1.RegisterPeerServiceServer(srv, p)
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	p.log.Info("peer service starting", slog.String("addr", ln.Addr().String()))
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		return fmt.Errorf("peer service: %w", err)
	}
	return nil
}

// Run sends the queued nudges until ctx ends. Local commits that touch the task queue, as
// reported by Store.Subscribe, queue a WakeShards call.
func (p *Peers) Run(ctx context.Context) error {
	commits, cancel := p.cfg.Store.Subscribe()
	defer cancel()
	defer p.closeConns()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-commits:
			p.mu.Lock()
			p.wake = true
			p.mu.Unlock()
		case <-p.kick:
		}
		// Wait one flush interval, so nudges of one burst travel together.
		t := time.NewTimer(p.cfg.FlushInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		p.flush(ctx)
	}
}

// flush sends the queued nudges. Wake-ups go to every live peer. A device notification goes to
// the live replica that the session registry names as the holder of the device's stream, or to
// every live peer when the registry names no live replica other than this one.
func (p *Peers) flush(ctx context.Context) {
	p.mu.Lock()
	devices := slices.Sorted(maps.Keys(p.devices))
	wake := p.wake
	p.devices, p.wake = map[string]bool{}, false
	p.mu.Unlock()
	if len(devices) == 0 && !wake {
		return
	}
	peers, holders, err := p.livePeers(ctx, devices)
	if err != nil {
		p.log.Warn("list replicas for peer nudges failed", slog.Any("err", err))
		return
	}
	perPeer := map[string][]string{}
	for _, d := range devices {
		holder := holders[d]
		switch {
		case holder == p.cfg.ReplicaID:
			// This replica holds the stream and Notify already signalled it.
		case peers[holder] != "":
			perPeer[holder] = append(perPeer[holder], d)
		default:
			for id := range peers {
				perPeer[id] = append(perPeer[id], d)
			}
		}
	}
	var wg sync.WaitGroup
	for id, addr := range peers {
		if !wake && len(perPeer[id]) == 0 {
			continue
		}
		client, err := p.client(addr)
		if err != nil {
			p.log.Warn("connect to peer failed", slog.String("peer", addr), slog.Any("err", err))
			continue
		}
		wg.Go(func() { p.send(ctx, client, addr, perPeer[id], wake) })
	}
	wg.Wait()
}

func (p *Peers) send(ctx context.Context, client peerv1.PeerServiceClient, addr string,
	devices []string, wake bool) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if wake {
		if _, err := client.WakeShards(ctx, &peerv1.WakeShardsRequest{}); err != nil {
			p.log.Debug("wake peer failed", slog.String("peer", addr), slog.Any("err", err))
		}
	}
	if len(devices) > 0 {
		req := &peerv1.NotifyDevicesRequest{Devices: devices}
		if _, err := client.NotifyDevices(ctx, req); err != nil {
			p.log.Debug("notify peer failed", slog.String("peer", addr),
				slog.Int("devices", len(devices)), slog.Any("err", err))
		}
	}
}

// livePeers returns the address of each other replica with a recent heartbeat, by id, and the
// session registry's holder of each of devices, read in one transaction.
func (p *Peers) livePeers(ctx context.Context, devices []string) (map[string]string, map[string]string, error) {
	var replicas []store.Replica
	var holders map[string]string
	err := p.cfg.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		if replicas, err = tx.Replicas(ctx); err != nil {
			return err
		}
		if len(devices) == 0 {
			return nil
		}
		holders, err = tx.SessionHolders(ctx, devices)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	cutoff := time.Now().Add(-p.cfg.LiveAfter)
	peers := map[string]string{}
	for _, r := range replicas {
		if r.ID != p.cfg.ReplicaID && r.Address != "" && r.HeartbeatAt.After(cutoff) {
			peers[r.ID] = r.Address
		}
	}
	return peers, holders, nil
}

// client returns a PeerService client for addr, reusing its connection.
func (p *Peers) client(addr string) (peerv1.PeerServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	conn := p.conns[addr]
	if conn == nil {
		var err error
		conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		p.conns[addr] = conn
	}
	return peerv1.NewPeerServiceClient(conn), nil
}

func (p *Peers) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, conn := range p.conns {
		_ = conn.Close()
		delete(p.conns, addr)
	}
}
