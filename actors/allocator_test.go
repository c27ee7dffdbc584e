package actors

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var (
	t0      = time.Unix(1_700_000_000, 0)
	clientA = netip.MustParseAddr("2001:db8::a")
	clientB = netip.MustParseAddr("2001:db8::b")
	clientC = netip.MustParseAddr("2001:db8::c")
)

func TestAllocatorRange(t *testing.T) {
	tests := []struct {
		prefix      string
		first, last string
		size        int
	}{
		{"192.0.2.0/24", "192.0.2.2", "192.0.2.254", 253},
		{"192.0.2.0/29", "192.0.2.2", "192.0.2.6", 5},
		{"192.0.2.64/30", "192.0.2.66", "192.0.2.66", 1},
		{"198.51.100.77/24", "198.51.100.2", "198.51.100.254", 253},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			a := newAllocator(netip.MustParsePrefix(tc.prefix), time.Minute)
			if a.first.String() != tc.first || a.last.String() != tc.last || a.size != tc.size {
				t.Fatalf("range = %v..%v (%d), want %s..%s (%d)", a.first, a.last, a.size, tc.first, tc.last, tc.size)
			}
			seen := map[netip.Addr]bool{}
			for i := range tc.size {
				addr, ok := a.allocate(string(rune('a'+i)), netip.Addr{}, t0)
				if !ok || seen[addr] || !a.inRange(addr) {
					t.Fatalf("allocation %d = %v, %v (seen %v)", i, addr, ok, seen[addr])
				}
				seen[addr] = true
			}
			if addr, ok := a.allocate("overflow", netip.Addr{}, t0); ok {
				t.Fatalf("full pool handed out %v", addr)
			}
		})
	}
}

func TestAllocatorStickiness(t *testing.T) {
	pool := netip.MustParsePrefix("192.0.2.0/29") // 5 leasable
	tests := []struct {
		name  string
		steps func(t *testing.T, a *allocator)
	}{
		{"same owner gets same address", func(t *testing.T, a *allocator) {
			x, _ := a.allocate("s1", clientA, t0)
			y, _ := a.allocate("s1", clientA, t0)
			if x != y {
				t.Fatalf("repeat request got %v then %v", x, y)
			}
		}},
		{"reconnect within grace gets old address", func(t *testing.T, a *allocator) {
			x, _ := a.allocate("s1", clientA, t0)
			a.release("s1", clientA, t0)
			_, _ = a.allocate("s2", clientB, t0.Add(time.Second))
			y, _ := a.allocate("s3", clientA, t0.Add(2*time.Second))
			if x != y {
				t.Fatalf("client A got %v, then %v after reconnect", x, y)
			}
		}},
		{"others avoid a reserved address while others are free", func(t *testing.T, a *allocator) {
			x, _ := a.allocate("s1", clientA, t0)
			a.release("s1", clientA, t0)
			for i := range 4 {
				y, _ := a.allocate(string(rune('b'+i)), clientB, t0)
				if y == x {
					t.Fatalf("allocation %d took %v reserved for A", i, x)
				}
			}
		}},
		{"reserved address is lent when nothing else is free", func(t *testing.T, a *allocator) {
			x, _ := a.allocate("s1", clientA, t0)
			a.release("s1", clientA, t0)
			for i := range 4 {
				a.allocate(string(rune('b'+i)), clientB, t0)
			}
			y, ok := a.allocate("last", clientC, t0)
			if !ok || y != x {
				t.Fatalf("last allocation = %v, %v; want the reserved %v", y, ok, x)
			}
		}},
		{"after grace the reservation lapses", func(t *testing.T, a *allocator) {
			x, _ := a.allocate("s1", clientA, t0)
			a.release("s1", clientA, t0)
			if a.isReserved(x, t0.Add(2*time.Minute)) {
				t.Fatal("reservation outlived the grace period")
			}
			if _, ok := a.byClient[clientA]; ok {
				t.Fatal("lapsed reservation still indexed by client")
			}
		}},
		{"claim restores a lease and refuses a taken address", func(t *testing.T, a *allocator) {
			addr := netip.MustParseAddr("192.0.2.4")
			if !a.claim("s1", addr) || !a.claim("s1", addr) {
				t.Fatal("claim of a free address failed")
			}
			if a.claim("s2", addr) {
				t.Fatal("second owner claimed a taken address")
			}
			if a.claim("s3", netip.MustParseAddr("192.0.2.1")) || a.claim("s3", netip.MustParseAddr("192.0.2.7")) {
				t.Fatal("claimed the server or broadcast address")
			}
			if got, _ := a.allocate("s1", clientA, t0); got != addr {
				t.Fatalf("claimed owner then allocated %v, want %v", got, addr)
			}
		}},
		{"release twice is harmless", func(t *testing.T, a *allocator) {
			a.allocate("s1", clientA, t0)
			if _, ok := a.release("s1", clientA, t0); !ok {
				t.Fatal("first release reported nothing")
			}
			if _, ok := a.release("s1", clientA, t0); ok {
				t.Fatal("second release released something")
			}
			if a.leased() != 0 {
				t.Fatalf("leased = %d after release", a.leased())
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.steps(t, newAllocator(pool, time.Minute))
		})
	}
}

// In a fleet the allocator leases only from the node's blocks, lowest
// first, and from the next block once one is full; never outside them.
func TestAllocatorLeasesOnlyFromItsBlocks(t *testing.T) {
	a := newAllocator(netip.MustParsePrefix("192.0.2.0/24"), time.Minute)
	blocks := []netip.Prefix{netip.MustParsePrefix("192.0.2.32/30"), netip.MustParsePrefix("192.0.2.200/30")}
	a.blocks = func() []netip.Prefix { return blocks }
	client := netip.MustParseAddr("2001:db8:c::1")
	var got []string
	for i := range 9 {
		addr, ok := a.allocate(fmt.Sprint("s", i), client, time.Now())
		if !ok {
			got = append(got, "none")
			continue
		}
		got = append(got, addr.String())
	}
	want := "[192.0.2.32 192.0.2.33 192.0.2.34 192.0.2.35 192.0.2.200 192.0.2.201 192.0.2.202 192.0.2.203 none]"
	if fmt.Sprint(got) != want {
		t.Errorf("leased %v, want %s", got, want)
	}
}
