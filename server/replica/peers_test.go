package replica

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// testPeer is one replica's Peers, serving on loopback, with the device notifications it received.
type testPeer struct {
	peers    *Peers
	notified chan string
}

// startPeers runs one Peers per id on a shared store, each registered as a live member.
func startPeers(t *testing.T, st store.Store, ids ...string) map[string]*testPeer {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{}, 2*len(ids))
	t.Cleanup(func() {
		cancel()
		for range 2 * len(ids) {
			<-done
		}
	})
	out := map[string]*testPeer{}
	for _, id := range ids {
		tp := &testPeer{notified: make(chan string, 100)}
		p, err := New(Config{
			Store: st, ReplicaID: id, LiveAfter: time.Minute,
			Wake: func() {}, Notify: func(d string) { tp.notified <- d },
		})
		if err != nil {
			t.Fatal(err)
		}
		tp.peers = p
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		err = st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			now := time.Now()
			return tx.Heartbeat(ctx, store.Replica{ID: id, Address: ln.Addr().String(),
				StartedAt: now, HeartbeatAt: now})
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if err := p.Serve(ctx, ln); err != nil {
				t.Errorf("serve peer %s: %v", id, err)
			}
			done <- struct{}{}
		}()
		go func() {
			_ = p.Run(ctx)
			done <- struct{}{}
		}()
		out[id] = tp
	}
	return out
}

// next returns the next device notification the peer received, or fails after a generous deadline.
func (tp *testPeer) next(t *testing.T) string {
	t.Helper()
	select {
	case d := <-tp.notified:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no device notification arrived within 10s")
		return ""
	}
}

func TestNotifyGoesToTheStreamHolder(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	peers := startPeers(t, st, "r1", "r2", "r3")
	err = st.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		return tx.OpenSessions(ctx, "r2", []string{"held-by-r2"}, time.Now())
	})
	if err != nil {
		t.Fatal(err)
	}

	r1 := peers["r1"]
	r1.peers.Notify("held-by-r2")
	if got := r1.next(t); got != "held-by-r2" {
		t.Errorf("r1 signalled %q locally; want held-by-r2", got)
	}
	if got := peers["r2"].next(t); got != "held-by-r2" {
		t.Errorf("r2 was told about %q; want held-by-r2", got)
	}

	// A device without a registry entry goes to every peer. The flush that carried the first
	// device ended before this one starts, so r3 would have seen the first device first.
	r1.peers.Notify("unregistered")
	for _, id := range []string{"r2", "r3"} {
		if got := peers[id].next(t); got != "unregistered" {
			t.Errorf("%s was told about %q; want only unregistered", id, got)
		}
	}
}
