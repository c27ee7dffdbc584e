package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/tun"
)

// fakeOverlay records the peers it was given.
type fakeOverlay struct {
	peers []tun.Peer
	err   error
}

func (f *fakeOverlay) SetPeers(peers []tun.Peer) error {
	f.peers = peers
	return f.err
}

// fakeRoutes is a TUN's routing table: it records the calls and keeps the
// routes that are in. A failing AddRoutes installs only the first prefix
// (as the real one stops at the first error); a failing DeleteRoutes
// removes none.
type fakeRoutes struct {
	mu               sync.Mutex
	in               map[netip.Prefix]bool
	calls            []string
	failAdd, failDel bool
}

func (f *fakeRoutes) AddRoutes(ps []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "add "+joinPrefixes(ps))
	if f.in == nil {
		f.in = map[netip.Prefix]bool{}
	}
	for i, p := range ps {
		if f.failAdd && i > 0 {
			return fmt.Errorf("failed to add route to %v via TUN: file exists", p)
		}
		f.in[p] = true
	}
	return nil
}

func (f *fakeRoutes) DeleteRoutes(ps []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "del "+joinPrefixes(ps))
	if f.failDel {
		return errors.New("failed to delete route: operation not permitted")
	}
	for _, p := range ps {
		delete(f.in, p)
	}
	return nil
}

// take returns and forgets the calls, and lists the routes that are in.
func (f *fakeRoutes) take() (calls, in []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	calls, f.calls = f.calls, nil
	for p := range f.in {
		in = append(in, p.String())
	}
	slices.Sort(in)
	return calls, in
}

func joinPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, " ")
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// TestDataPlaneSetLocal drives one data plane through a sequence of
// SetLocal calls: only changes reach the kernel, and a route whose add or
// delete failed is tried again by the next call, so none is left behind.
func TestDataPlaneSetLocal(t *testing.T) {
	routes := &fakeRoutes{}
	dp := newDataPlane(&fakeOverlay{}, routes)
	steps := []struct {
		name             string
		set              []netip.Addr
		failAdd, failDel bool
		calls            []string
		in               []string
		wantErr          string
	}{
		{"two claims", addrs("192.0.2.71", "192.0.2.70"), false, false,
			[]string{"add 192.0.2.70/32 192.0.2.71/32"}, []string{"192.0.2.70/32", "192.0.2.71/32"}, ""},
		{"one moves", addrs("192.0.2.71", "192.0.2.72"), false, false,
			[]string{"add 192.0.2.72/32", "del 192.0.2.70/32"}, []string{"192.0.2.71/32", "192.0.2.72/32"}, ""},
		{"the same again", addrs("192.0.2.72", "192.0.2.71", "192.0.2.72"), false, false, nil, []string{"192.0.2.71/32", "192.0.2.72/32"}, ""},
		{"add fails half way", addrs("192.0.2.73", "192.0.2.74"), true, false,
			[]string{"add 192.0.2.73/32 192.0.2.74/32", "del 192.0.2.71/32 192.0.2.72/32"}, []string{"192.0.2.73/32"}, "file exists"},
		{"all given up, the half-added too", nil, false, false, []string{"del 192.0.2.73/32 192.0.2.74/32"}, nil, ""},
		{"one more", addrs("192.0.2.75"), false, false, []string{"add 192.0.2.75/32"}, []string{"192.0.2.75/32"}, ""},
		{"delete fails", nil, false, true, []string{"del 192.0.2.75/32"}, []string{"192.0.2.75/32"}, "not permitted"},
		{"delete retried", nil, false, false, []string{"del 192.0.2.75/32"}, nil, ""},
		{"nothing to do", nil, false, false, nil, nil, ""},
		{"an IPv6 address is refused, the rest applied", addrs("2001:db8::1", "192.0.2.76"), false, false,
			[]string{"add 192.0.2.76/32"}, []string{"192.0.2.76/32"}, "2001:db8::1"},
	}
	for _, st := range steps {
		routes.failAdd, routes.failDel = st.failAdd, st.failDel
		err := dp.SetLocal(st.set)
		if st.wantErr == "" && err != nil || st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)) {
			t.Fatalf("%s: SetLocal(%v) = %v, want error %q", st.name, st.set, err, st.wantErr)
		}
		calls, in := routes.take()
		if !slices.Equal(calls, st.calls) || !slices.Equal(in, st.in) {
			t.Fatalf("%s: calls %q, routes %v; want %q, %v", st.name, calls, in, st.calls, st.in)
		}
	}
}

// TestDataPlaneSetPeers checks the conversion to the VXLAN device's peers
// and that its error reaches the engine with context.
func TestDataPlaneSetPeers(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x4f, 0x36, 0, 0, 2}
	peers := []actors.FleetPeer{
		{Name: "n2", Underlay: netip.MustParseAddr("2001:db8:1::2"), MAC: mac,
			Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.64/26"), netip.MustParsePrefix("192.0.2.9/32")}},
		{Name: "n3", Underlay: netip.MustParseAddr("2001:db8:1::3")},
	}
	tests := []struct {
		name    string
		peers   []actors.FleetPeer
		err     error
		want    string // fmt of the tun.Peers given
		wantErr string
	}{
		{"two peers", peers, nil, "[{n2 2001:db8:1::2 02:4f:36:00:00:02 [192.0.2.64/26 192.0.2.9/32]} {n3 2001:db8:1::3  []}]", ""},
		{"none left", nil, nil, "[]", ""},
		{"device refuses", peers[:1], errors.New("netlink: no such device"), "[{n2 2001:db8:1::2 02:4f:36:00:00:02 [192.0.2.64/26 192.0.2.9/32]}]",
			"failed to program 1 fleet peers: netlink: no such device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vx := &fakeOverlay{err: tc.err}
			err := newDataPlane(vx, &fakeRoutes{}).SetPeers(tc.peers)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Fatalf("SetPeers = %v, want error %q", err, tc.wantErr)
			}
			if got := fmt.Sprint(vx.peers); got != tc.want {
				t.Fatalf("device got %s, want %s", got, tc.want)
			}
		})
	}
	// The device may keep the prefixes: they are its own copy.
	vx := &fakeOverlay{}
	_ = newDataPlane(vx, &fakeRoutes{}).SetPeers(peers)
	peers[0].Prefixes[0] = netip.MustParsePrefix("198.51.100.0/24")
	if got := vx.peers[0].Prefixes[0].String(); got != "192.0.2.64/26" {
		t.Fatalf("the device's prefixes changed with the engine's slice: %s", got)
	}
}
