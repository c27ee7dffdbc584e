//go:build linux

package actors

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// partition is one node's link to etcd, which the test can cut: every
// connection is closed and new ones fail, as if the network between that
// node and etcd were down while its clients still reach it.
type partition struct {
	dial  func(ctx context.Context, addr string) (net.Conn, error)
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (p *partition) Dial(ctx context.Context, addr string) (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return nil, errors.New("partitioned from etcd (test)")
	}
	c, err := p.dial(ctx, addr)
	if err == nil {
		p.conns = append(p.conns, c)
	}
	return c, err
}

func (p *partition) set(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}

// A node cut off from etcd keeps its session; its lease runs out and
// another node takes its block, but never the address the session holds
// (the binding outlives the node lease); once healed it claims that
// address as a /32 and the session goes on.
func TestFleetPartitionedNodeNeverSharesAnAddress(t *testing.T) {
	r := newFleetRig(t, "n2")
	p := &partition{dial: func(ctx context.Context, addr string) (net.Conn, error) { return r.fab.DialContext(ctx, "tcp", addr) }}
	n1 := r.startWith("n1", r.joinVia("n1", p.Dial))
	n2 := r.nodes["n2"]
	c := r.dial(n1, 0)
	x := handshakeWithin(c, 10*time.Second)

	p.set(true)
	eventually(t, 10*time.Second, "n1 to turn read-only", func() bool { return n1.h.srv.Metrics().FleetState.Load() == 1 })
	if err := n1.h.srv.Reserve(messages.Static{Client: clientAddr(40), Addr: netip.MustParseAddr("192.0.2.250")}); !errors.Is(err, ErrFleetUnavailable) {
		t.Fatalf("a reservation on a read-only node: %v, want ErrFleetUnavailable", err)
	}
	eventually(t, 10*time.Second, "n1's registration to run out", func() bool {
		return r.etcd.CountKeys(t, r.prefix+"nodes/n1") == 0
	})
	xBlock := netip.PrefixFrom(x, 28).Masked().Addr()
	for i := 1; i <= 40; i++ { // more than n2's first blocks: it takes n1's old one too
		if a := handshakeWithin(r.dial(n2, i), 10*time.Second); a == x {
			t.Fatalf("n2 leased %v, which n1's session still holds", a)
		}
	}
	if got := r.etcd.Keys(t, r.prefix+"blocks/"+xBlock.String()); len(got) != 1 {
		t.Fatalf("n2 did not take n1's old block %v (blocks: %v): the test proved nothing", xBlock, r.etcd.Keys(t, r.prefix+"blocks/"))
	}
	// The partitioned node's session still carries traffic.
	c.send(wire.TypeDataRequest, ping(x, inetHost, 1))
	if got := n1.h.written(5 * time.Second); netip.AddrFrom4([4]byte(got[12:16])) != x {
		t.Fatal("the partitioned node's session no longer carries traffic")
	}

	// Healing: n1 registers again and claims the session's address as a
	// /32 (it lies in n2's block now), and the session goes on.
	p.set(false)
	claim := r.prefix + "claims/" + x.String()
	eventually(t, 20*time.Second, "n1 to register again and claim "+x.String(), func() bool {
		return r.etcd.CountKeys(t, r.prefix+"nodes/n1") == 1 && strings.Contains(r.etcd.Value(t, claim), `"n1"`)
	})
	eventually(t, 10*time.Second, "n1 to take sessions again", func() bool { return n1.h.srv.Metrics().FleetState.Load() == 0 })
	c.send(wire.TypeDataRequest, ping(x, inetHost, 2))
	if got := n1.h.written(5 * time.Second); netip.AddrFrom4([4]byte(got[12:16])) != x {
		t.Fatal("the session no longer carries traffic after the partition healed")
	}
}
