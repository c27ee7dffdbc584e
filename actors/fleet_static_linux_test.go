//go:build linux

package actors

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages"
)

// A reservation made on one node applies on every node: its client gets
// the address on another node, which claims it as a /32 (it lies in no
// block of that node), and nobody else is given it; an address another
// node has bound to a client cannot be reserved for someone else; two
// nodes changing the table at once both land; removing a reservation on
// any node removes it everywhere.
func TestFleetStaticReservationsApplyFleetWide(t *testing.T) {
	r := newFleetRig(t, "n1", "n2")
	n1, n2 := r.nodes["n1"], r.nodes["n2"]
	handshakeWithin(r.dial(n1, 1), 10*time.Second) // each node holds a block
	a2 := handshakeWithin(r.dial(n2, 2), 10*time.Second)

	want := netip.MustParseAddr("192.0.2.200")
	if err := n1.h.srv.Reserve(messages.Static{Client: clientAddr(5), Addr: want}); err != nil {
		t.Fatalf("Reserve on n1: %v", err)
	}
	waitStatics(t, n2, []netip.Addr{want})
	if err := n1.h.srv.Reserve(messages.Static{Client: clientAddr(6), Addr: a2}); !errors.Is(err, ErrReservationConflict) {
		t.Fatalf("reserving %v (bound on n2 to another client) on n1: %v, want a conflict", a2, err)
	}

	if got := handshakeWithin(r.dial(n2, 5), 10*time.Second); got != want {
		t.Fatalf("the reserved client got %v on n2, want %v", got, want)
	}
	eventually(t, 10*time.Second, "n2 to claim "+want.String(), func() bool {
		return strings.Contains(r.etcd.Value(t, r.prefix+"claims/"+want.String()), `"n2"`)
	})
	for i := 10; i < 14; i++ {
		if got := handshakeWithin(r.dial(n1, i), 10*time.Second); got == want {
			t.Fatalf("n1 gave client %d the address reserved for another client", i)
		}
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []*fleetNode{n1, n2} {
		wg.Go(func() {
			errs[i] = n.h.srv.Reserve(messages.Static{Client: clientAddr(20 + i), Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(210 + i)})})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent reservations on two nodes: %v", err)
	}
	all := []netip.Addr{want, netip.MustParseAddr("192.0.2.210"), netip.MustParseAddr("192.0.2.211")}
	waitStatics(t, n1, all)
	waitStatics(t, n2, all)

	if err := n2.h.srv.Unreserve(clientAddr(5)); err != nil {
		t.Fatalf("Unreserve on n2: %v", err)
	}
	waitStatics(t, n1, all[1:])
}

// waitStatics waits until n's reservations are exactly the addresses
// want (in client order).
func waitStatics(t *testing.T, n *fleetNode, want []netip.Addr) {
	t.Helper()
	var got []netip.Addr
	eventually(t, 10*time.Second, n.name+" to list the fleet's reservations", func() bool {
		rs, err := n.h.srv.Reservations()
		if err != nil {
			return false
		}
		got = got[:0]
		for _, s := range rs {
			got = append(got, s.Addr)
		}
		return slices.Equal(got, want)
	})
}

// A node's reservations file seeds a fleet that has no table yet, a
// SIGHUP reload makes the file's entries the fleet's, and every change
// is written back to the file.
func TestFleetReservationsFileSeedsAndReloads(t *testing.T) {
	r := newFleetRig(t)
	path := filepath.Join(t.TempDir(), "reservations.json")
	writeFile := func(addrs ...string) {
		var b strings.Builder
		for i, a := range addrs {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"client":"%s","addr":"%s"}`, clientAddr(30+i), a)
		}
		if err := os.WriteFile(path, []byte(`{"reservations":[`+b.String()+`]}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile("192.0.2.220")
	n1 := r.startWith("n1", r.join("n1"), func(c *Config) { c.ReservationsFile = path })
	n2 := r.start("n2")
	waitStatics(t, n2, []netip.Addr{netip.MustParseAddr("192.0.2.220")})

	writeFile("192.0.2.221", "192.0.2.222")
	if err := n1.h.srv.ReloadReservations(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	waitStatics(t, n2, []netip.Addr{netip.MustParseAddr("192.0.2.221"), netip.MustParseAddr("192.0.2.222")})

	if err := n2.h.srv.Unreserve(clientAddr(30)); err != nil {
		t.Fatalf("Unreserve on n2: %v", err)
	}
	eventually(t, 10*time.Second, "n1's file to follow the fleet's table", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && !strings.Contains(string(b), "192.0.2.221") && strings.Contains(string(b), "192.0.2.222")
	})
}
