package actors

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/4over6d/4over6d/messages"
)

func put(key, value string, rev int64) fleetEvent {
	return fleetEvent{Key: key, Value: []byte(value), ModRev: rev}
}

func del(key string, rev int64) fleetEvent { return fleetEvent{Key: key, Deleted: true, ModRev: rev} }

func TestFleetKeysSplit(t *testing.T) {
	k := fleetKeys{prefix: "/f/"}
	for _, tc := range []struct {
		key, dir, name string
		ok             bool
	}{
		{"/f/config", keyConfig, "", true},
		{"/f/statics", keyStatics, "", true},
		{"/f/nodes/n1", dirNodes, "n1", true},
		{"/f/addrs/192.0.2.5", dirAddrs, "192.0.2.5", true},
		{"/g/nodes/n1", "", "", false},
		{"/f/junk", "", "", false},
	} {
		dir, name, ok := k.split(tc.key)
		if dir != tc.dir || name != tc.name || ok != tc.ok {
			t.Errorf("split(%q) = %q, %q, %v; want %q, %q, %v", tc.key, dir, name, ok, tc.dir, tc.name, tc.ok)
		}
	}
}

func TestFleetViewOwnersAndPeers(t *testing.T) {
	v := newFleetView(fleetKeys{prefix: "/f/"}, 28)
	for _, e := range []fleetEvent{
		put("/f/nodes/a", `{"name":"a","addr":"2001:db8:f::a1","mac":"02:00:00:00:00:0a"}`, 1),
		put("/f/nodes/b", `{"name":"b","addr":"2001:db8:f::a2","mac":"02:00:00:00:00:0b"}`, 2),
		put("/f/blocks/192.0.2.0", `{"node":"a"}`, 3),
		put("/f/blocks/192.0.2.16", `{"node":"b"}`, 4),
		put("/f/claims/192.0.2.20", `{"node":"a"}`, 5), // a client moved from b to a
		put("/f/claims/192.0.2.40", `{"node":"b"}`, 6), // in nobody's block
	} {
		if !v.apply(e) {
			t.Fatalf("apply(%s) refused", e.Key)
		}
	}
	for _, tc := range []struct {
		addr, owner string
	}{
		{"192.0.2.5", "a"}, {"192.0.2.17", "b"}, {"192.0.2.20", "a"}, {"192.0.2.40", "b"}, {"192.0.2.50", ""},
	} {
		if got := v.owner(netip.MustParseAddr(tc.addr)); got != tc.owner {
			t.Errorf("owner(%s) = %q, want %q", tc.addr, got, tc.owner)
		}
	}
	peers := v.peers("a")
	if got := fmt.Sprintf("%s %s %s %v", peers[0].Name, peers[0].Underlay, peers[0].MAC, peers[0].Prefixes); len(peers) != 1 ||
		got != "b 2001:db8:f::a2 02:00:00:00:00:0b [192.0.2.16/28 192.0.2.40/32]" {
		t.Errorf("peers of a: %v", peers)
	}
	if got := fmt.Sprint(v.localClaims("a")); got != "[192.0.2.20]" {
		t.Errorf("a's claims inside other nodes' blocks: %s, want [192.0.2.20]", got)
	}
	v.apply(del("/f/nodes/b", 7))
	if got := v.peers("a"); len(got) != 0 {
		t.Errorf("peers after b left: %v", got)
	}
}

func TestFleetViewBindingsIgnoreOlderEvents(t *testing.T) {
	v := newFleetView(fleetKeys{prefix: "/f/"}, 26)
	a := netip.MustParseAddr("192.0.2.9")
	src := netip.MustParseAddr("2001:db8:c::1")
	// A transaction's answer told us revision 10; the watch then delivers
	// revision 8, which must not win.
	v.apply(put("/f/addrs/192.0.2.9", `{"node":"b","client":"2001:db8:c::1"}`, 10))
	v.apply(put("/f/addrs/192.0.2.9", `{"node":"a","client":"2001:db8:c::1"}`, 8))
	if b := v.bindings[a]; b.Node != "b" || b.modRev != 10 || b.client != src {
		t.Errorf("binding after an older event: %+v", b)
	}
	v.apply(put("/f/clients/2001:db8:c::1", `{"addr":"192.0.2.9"}`, 10))
	v.apply(del("/f/clients/2001:db8:c::1", 9))
	if ce := v.clients[src]; ce.addr != a {
		t.Errorf("client record after an older delete: %+v", ce)
	}
	v.apply(del("/f/addrs/192.0.2.9", 11))
	if _, ok := v.bindings[a]; ok {
		t.Error("binding still there after a newer delete")
	}
}

func TestFleetViewRejectsMalformedRecords(t *testing.T) {
	v := newFleetView(fleetKeys{prefix: "/f/"}, 26)
	for _, e := range []fleetEvent{
		put("/f/blocks/not-an-ip", `{"node":"a"}`, 1),
		put("/f/blocks/192.0.2.0", `{"node":""}`, 2),
		put("/f/addrs/192.0.2.9", `{"node":"a","client":"nonsense"}`, 3),
		put("/f/clients/2001:db8::1", `{"addr":"x"}`, 4),
		put("/f/moves/2001:db8::1", `{}`, 5),
		put("/f/nodes/a", `not json`, 6),
		put("/f/other/x", `{}`, 7),
	} {
		if v.apply(e) {
			t.Errorf("apply(%s = %s) accepted a malformed record", e.Key, e.Value)
		}
	}
	if len(v.blocks)+len(v.bindings)+len(v.clients)+len(v.moves)+len(v.nodes) != 0 {
		t.Errorf("malformed records changed the view: %+v", v)
	}
}

func TestFleetViewStatics(t *testing.T) {
	const one = `[{"client":"2001:db8:c::1","addr":"192.0.2.9","rate":8000000}]`
	for _, tc := range []struct {
		name   string
		events []fleetEvent
		ok     bool   // the last event applies
		want   string // the table afterwards
		rev    int64
	}{
		{"a table", []fleetEvent{put("/f/statics", one, 5)}, true, "[{2001:db8:c::1 192.0.2.9 8000000}]", 5},
		{"emptied", []fleetEvent{put("/f/statics", one, 5), put("/f/statics", `[]`, 6)}, true, "[]", 6},
		{"deleted", []fleetEvent{put("/f/statics", one, 5), del("/f/statics", 7)}, true, "[]", 0},
		{"an older event loses", []fleetEvent{put("/f/statics", one, 5), put("/f/statics", `[]`, 4)}, true, "[{2001:db8:c::1 192.0.2.9 8000000}]", 5},
		{"a bad address spoils the record", []fleetEvent{put("/f/statics", one, 5), put("/f/statics", `[{"client":"x","addr":"192.0.2.9"}]`, 6)}, false, "[{2001:db8:c::1 192.0.2.9 8000000}]", 5},
		{"not a list", []fleetEvent{put("/f/statics", `{}`, 3)}, false, "[]", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newFleetView(fleetKeys{prefix: "/f/"}, 28)
			var ok bool
			for _, e := range tc.events {
				ok = v.apply(e)
			}
			if got := fmt.Sprint(v.statics); ok != tc.ok || (got != tc.want && !(tc.want == "[]" && len(v.statics) == 0)) || v.staticsRev != tc.rev {
				t.Errorf("after %d events: ok %v, table %s at %d; want %v, %s at %d", len(tc.events), ok, got, v.staticsRev, tc.ok, tc.want, tc.rev)
			}
		})
	}
}

// The table survives a round trip through its etcd encoding.
func TestFleetStaticsEncoding(t *testing.T) {
	in := sortStatics([]messages.Static{
		{Client: netip.MustParseAddr("2001:db8:c::2"), Addr: netip.MustParseAddr("192.0.2.7")},
		{Client: netip.MustParseAddr("2001:db8:c::1"), Addr: netip.MustParseAddr("192.0.2.9"), Rate: 1e6},
	})
	out, err := decodeStatics([]byte(encodeStatics(in)))
	if err != nil || !slices.Equal(out, in) {
		t.Fatalf("round trip: %v, %v; want %v", out, err, in)
	}
}
