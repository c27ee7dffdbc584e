package actors

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages"
)

// The allocator's static reservations: a reserved address goes to its
// client and to nobody else, whatever else the pool holds.
func TestAllocatorStatic(t *testing.T) {
	pool := netip.MustParsePrefix("192.0.2.0/29") // .2 to .6: 5 leasable
	x, y := netip.MustParseAddr("192.0.2.4"), netip.MustParseAddr("192.0.2.5")
	// fill leases every other address of the pool to owners of client C.
	fill := func(t *testing.T, a *allocator, n int) map[netip.Addr]bool {
		got := map[netip.Addr]bool{}
		for i := range n {
			addr, ok := a.allocate(fmt.Sprintf("c%d", i), clientC, t0)
			if !ok {
				t.Fatalf("allocation %d failed", i)
			}
			got[addr] = true
		}
		return got
	}
	tests := []struct {
		name  string
		steps func(t *testing.T, a *allocator)
	}{
		{"the reserved client gets its address, not the next free one", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			if got, ok := a.allocate("s1", clientA, t0); !ok || got != y {
				t.Fatalf("client A got %v, %v; want its reserved %v", got, ok, y)
			}
		}},
		{"nobody else gets it, not even when the pool is otherwise full", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			if got := fill(t, a, 4); got[y] {
				t.Fatalf("other clients got %v, reserved for A", y)
			}
			if got, ok := a.allocate("last", clientB, t0); ok {
				t.Fatalf("a full pool gave %v to B (reserved: %v)", got, y)
			}
			if got, ok := a.allocate("s1", clientA, t0); !ok || got != y {
				t.Fatalf("client A got %v, %v after the pool filled; want %v", got, ok, y)
			}
		}},
		{"a zone on the client's address does not matter", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			if got, _ := a.allocate("s1", clientA.WithZone("eth0"), t0); got != y {
				t.Fatalf("client A with a zone got %v, want %v", got, y)
			}
		}},
		{"a second session of the client gets an ordinary address", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			first, _ := a.allocate("s1", clientA, t0)
			second, ok := a.allocate("s2", clientA, t0)
			if first != y || !ok || second == y {
				t.Fatalf("sessions of A got %v and %v, %v; want %v then another", first, second, ok, y)
			}
		}},
		{"a session holding another address keeps it; the next lease is the reserved one", func(t *testing.T, a *allocator) {
			before, _ := a.allocate("s1", clientA, t0)
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			if got, _ := a.allocate("s1", clientA, t0); got != before {
				t.Fatalf("the live session's address moved from %v to %v", before, got)
			}
			a.release("s1", clientA, t0)
			if got, _ := a.allocate("s2", clientA, t0); got != y {
				t.Fatalf("the next lease of A is %v, want its reserved %v", got, y)
			}
		}},
		{"a static reservation wins over another client's grace reservation", func(t *testing.T, a *allocator) {
			a.claim("b1", y)
			a.release("b1", clientB, t0) // B's grace reservation of y
			g, dropped := a.setStatic(messages.Static{Client: clientA, Addr: y})
			if !dropped || g.Client != clientB || g.Addr != y {
				t.Fatalf("setStatic dropped %+v, %v; want B's grace reservation of %v", g, dropped, y)
			}
			if got, _ := a.allocate("b2", clientB, t0); got == y {
				t.Fatalf("B got %v back, statically reserved for A", y)
			}
			if got, _ := a.allocate("a1", clientA, t0); got != y {
				t.Fatalf("A got %v, want %v", got, y)
			}
		}},
		{"grace reservations are never lent from a static address", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			a.claim("b1", x)
			a.release("b1", clientB, t0)
			if got := fill(t, a, 4); got[y] || !got[x] {
				t.Fatalf("a full pool lent %v; want B's grace %v lent and the static %v kept", got, x, y)
			}
		}},
		{"the client's own grace reservation of its static address is no obstacle", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			a.allocate("a1", clientA, t0)
			a.release("a1", clientA, t0)
			if got, _ := a.allocate("a2", clientA, t0.Add(time.Second)); got != y {
				t.Fatalf("A got %v after reconnecting, want %v", got, y)
			}
		}},
		{"an unreserved address is ordinary again", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			if _, ok := a.removeStatic(clientA); !ok {
				t.Fatal("removeStatic found nothing")
			}
			if _, ok := a.removeStatic(clientA); ok {
				t.Fatal("removeStatic removed twice")
			}
			if got := fill(t, a, 5); !got[y] {
				t.Fatalf("a full pool %v lacks the unreserved %v", got, y)
			}
		}},
		{"replacing a reservation frees the old address", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientA, Addr: x})
			a.setStatic(messages.Static{Client: clientA, Addr: y, Rate: 8e6})
			if a.isStatic(x) {
				t.Fatalf("%v still reserved after A moved to %v", x, y)
			}
			if r, _ := a.staticFor(clientA); r.Addr != y || r.Rate != 8e6 {
				t.Fatalf("A's reservation is %+v", r)
			}
			if got := fill(t, a, 4); !got[x] || got[y] {
				t.Fatalf("others got %v; want %v among them and not %v", got, x, y)
			}
		}},
		{"listing is sorted by client; idle counts unleased reservations", func(t *testing.T, a *allocator) {
			a.setStatic(messages.Static{Client: clientB, Addr: x})
			a.setStatic(messages.Static{Client: clientA, Addr: y})
			if got := a.statics(); len(got) != 2 || got[0].Client != clientA || got[1].Client != clientB {
				t.Fatalf("statics = %+v, want A then B", got)
			}
			if n := a.staticIdle(); n != 2 {
				t.Fatalf("idle = %d, want 2", n)
			}
			a.allocate("a1", clientA, t0)
			if n := a.staticIdle(); n != 1 {
				t.Fatalf("idle = %d after A connected, want 1", n)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.steps(t, newAllocator(pool, time.Minute))
		})
	}
}
