package actors

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// awaitDownlink injects packets for c until one arrives, proving the
// TUN -> Router -> session path works. Other 103 frames (background
// traffic) are skipped.
func (h *harness) awaitDownlink(c *client, seq uint16) {
	h.t.Helper()
	marker := tuntest.Pong(inetHost, c.addr, 0xbeef, seq, []byte("marker"))
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		h.dev.Inject(marker)
		stop := time.Now().Add(100 * time.Millisecond)
		for {
			f, err := c.tryNext(time.Until(stop))
			if err != nil {
				break
			}
			if f.Type == wire.TypeDataReply && bytes.Equal(f.Payload, marker) {
				return
			}
		}
	}
	h.t.Fatalf("downlink to %v did not recover", c.addr)
}

// awaitUplink sends packets from c until one reaches the TUN.
func (h *harness) awaitUplink(c *client, seq uint16) {
	h.t.Helper()
	marker := tuntest.Ping(c.addr, inetHost, 0xcafe, seq, []byte("marker"))
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		c.send(wire.TypeDataRequest, marker)
		stop := time.After(100 * time.Millisecond)
	drain:
		for {
			select {
			case p := <-h.dev.Written():
				if bytes.Equal(p, marker) {
					return
				}
			case <-stop:
				break drain
			}
		}
	}
	h.t.Fatalf("uplink from %v did not recover", c.addr)
}

// background keeps packets flowing towards a client so faults happen
// under traffic. It stops when the test ends.
func (h *harness) background(c *client) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pkt := tuntest.UDP(netip.AddrPortFrom(inetHost, 53), netip.AddrPortFrom(c.addr, 4000), make([]byte, 1200))
		for ctx.Err() == nil {
			h.dev.Inject(pkt)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	h.t.Cleanup(func() { cancel(); wg.Wait() })
}

// checkConsistent verifies the invariants a fault must not break: every
// live session has exactly one lease, no address is leased twice, and the
// Router's map equals the pool's table.
func (h *harness) checkConsistent(live ...*client) {
	h.t.Helper()
	eventually(h.t, wait, "routes to match leases", func() bool {
		lt, err1 := h.srv.Leases()
		rt, err2 := h.srv.Routes()
		if err1 != nil || err2 != nil || len(lt.Leases) != len(live) || len(rt.Routes) != len(live) {
			return false
		}
		for _, l := range lt.Leases {
			if pid := rt.Routes[l.Addr]; pid == nil || !pid.Equal(l.Session) {
				return false
			}
		}
		for _, c := range live {
			if rt.Routes[c.addr] == nil {
				return false
			}
		}
		return true
	})
}

func TestPanicsAreContained(t *testing.T) {
	h := newHarness(t)
	victim, b, c := h.connect(), h.connect(), h.connect()
	h.background(c)
	ctx := context.Background()

	if err := h.srv.InjectPanic(ctx, "session", victim.addr); err != nil {
		t.Fatal(err)
	}
	victim.expectClosed(wait)
	h.checkConsistent(b, c)
	h.awaitUplink(b, 1)
	h.awaitDownlink(b, 1)

	for i, kind := range []string{"router", "tun", "pool"} {
		if err := h.srv.InjectPanic(ctx, kind, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
		h.awaitDownlink(b, uint16(10+i))
		h.awaitUplink(b, uint16(10+i))
		h.awaitDownlink(c, uint16(10+i))
		h.checkConsistent(b, c)
	}
	fresh := h.connect()
	if fresh.addr == b.addr || fresh.addr == c.addr {
		t.Fatalf("after a pool crash a new client got %v, already leased to b=%v or c=%v", fresh.addr, b.addr, c.addr)
	}
	h.checkConsistent(b, c, fresh)
	if n := h.srv.Metrics().ClosedBy(ClosePanic); n != 1 {
		t.Errorf("sessions closed by panic = %d, want 1", n)
	}
	for kind, want := range map[ActorKind]uint64{KindSession: 1, KindRouter: 1, KindTUN: 1, KindPool: 1} {
		if got := h.srv.Metrics().Failures(kind); got != want {
			t.Errorf("failures[%v] = %d, want %d", kind, got, want)
		}
	}
}

func TestPoolCrashWhileRequestsArrive(t *testing.T) {
	h := newHarness(t)
	old := h.connect()
	if err := h.srv.InjectPanic(context.Background(), "pool", netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	clients := []*client{old}
	for range 5 {
		clients = append(clients, h.connect())
	}
	seen := map[netip.Addr]bool{}
	for _, c := range clients {
		if seen[c.addr] {
			t.Fatalf("address %v leased twice", c.addr)
		}
		seen[c.addr] = true
	}
	h.checkConsistent(clients...)
}
