package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/4over6d/4over6d/messages"
)

// fleetEvent is one change under the fleet's prefix, as the watcher saw
// it: a put (value set) or a delete.
type fleetEvent struct {
	Key     string
	Value   []byte
	Deleted bool
	ModRev  int64
	Lease   int64
}

// binding is addrs/ADDR as the view keeps it, with the revision a
// transaction must compare to change it.
type binding struct {
	bindingRecord
	client netip.Addr
	modRev int64
	lease  int64
}

// clientEntry is clients/SOURCE as the view keeps it.
type clientEntry struct {
	addr   netip.Addr
	modRev int64
}

// fleetView is the pool's copy of the fleet's state in etcd, built from a
// snapshot and kept current by watch events. It is owned by the pool actor
// and decides nothing alone: every decision that matters is a transaction
// etcd checks; the view only picks candidates and programs routes.
type fleetView struct {
	keys     fleetKeys
	bits     int // block length
	nodes    map[string]nodeRecord
	blocks   map[netip.Addr]string // first address -> node
	claims   map[netip.Addr]string // single address -> node
	bindings map[netip.Addr]binding
	clients  map[netip.Addr]clientEntry // client source -> address
	moves    map[netip.Addr]moveRecord  // client source -> who wants it
	// statics is the fleet-wide table of static reservations and
	// staticsRev the revision a change must compare (0: no table yet).
	statics    []messages.Static
	staticsRev int64
}

func newFleetView(keys fleetKeys, bits int) *fleetView {
	return &fleetView{
		keys:     keys,
		bits:     bits,
		nodes:    make(map[string]nodeRecord),
		blocks:   make(map[netip.Addr]string),
		claims:   make(map[netip.Addr]string),
		bindings: make(map[netip.Addr]binding),
		clients:  make(map[netip.Addr]clientEntry),
		moves:    make(map[netip.Addr]moveRecord),
	}
}

// apply folds one event into the view. Records that do not parse are
// ignored (and reported), never guessed at.
func (v *fleetView) apply(e fleetEvent) bool {
	dir, name, ok := v.keys.split(e.Key)
	if !ok {
		return false
	}
	if dir == dirNodes {
		return v.applyNode(name, e)
	}
	if dir == keyConfig {
		return true
	}
	if dir == keyStatics {
		return v.applyStatics(e)
	}
	a, err := netip.ParseAddr(name)
	if err != nil {
		return false
	}
	switch dir {
	case dirBlocks:
		return applyOwner(v.blocks, a, e)
	case dirClaims:
		return applyOwner(v.claims, a, e)
	case dirAddrs:
		return v.applyBinding(a, e)
	case dirClients:
		return v.applyClient(a, e)
	case dirMoves:
		return v.applyMove(a, e)
	}
	return false
}

func (v *fleetView) applyNode(name string, e fleetEvent) bool {
	if e.Deleted {
		delete(v.nodes, name)
		return true
	}
	var r nodeRecord
	if json.Unmarshal(e.Value, &r) != nil {
		return false
	}
	v.nodes[name] = r
	return true
}

func applyOwner(m map[netip.Addr]string, a netip.Addr, e fleetEvent) bool {
	if e.Deleted {
		delete(m, a)
		return true
	}
	var r ownerRecord
	if json.Unmarshal(e.Value, &r) != nil || r.Node == "" {
		return false
	}
	m[a] = r.Node
	return true
}

func (v *fleetView) applyBinding(a netip.Addr, e fleetEvent) bool {
	if old, ok := v.bindings[a]; ok && e.ModRev < old.modRev {
		return true // older than what a transaction's answer told us
	}
	if e.Deleted {
		delete(v.bindings, a)
		return true
	}
	var r bindingRecord
	if json.Unmarshal(e.Value, &r) != nil {
		return false
	}
	client, err := netip.ParseAddr(r.Client)
	if err != nil {
		return false
	}
	v.bindings[a] = binding{bindingRecord: r, client: client, modRev: e.ModRev, lease: e.Lease}
	return true
}

func (v *fleetView) applyClient(src netip.Addr, e fleetEvent) bool {
	if old, ok := v.clients[src]; ok && e.ModRev < old.modRev {
		return true
	}
	if e.Deleted {
		delete(v.clients, src)
		return true
	}
	var r clientRecord
	if json.Unmarshal(e.Value, &r) != nil {
		return false
	}
	a, err := netip.ParseAddr(r.Addr)
	if err != nil {
		return false
	}
	v.clients[src] = clientEntry{addr: a, modRev: e.ModRev}
	return true
}

// applyStatics replaces the table; an entry that does not parse spoils
// the whole record (it is never guessed at).
func (v *fleetView) applyStatics(e fleetEvent) bool {
	if e.ModRev < v.staticsRev {
		return true
	}
	if e.Deleted {
		v.statics, v.staticsRev = nil, 0
		return true
	}
	table, err := decodeStatics(e.Value)
	if err != nil {
		return false
	}
	v.statics, v.staticsRev = table, e.ModRev
	return true
}

func decodeStatics(b []byte) ([]messages.Static, error) {
	var recs []staticRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("statics: %w", err)
	}
	out := make([]messages.Static, 0, len(recs))
	for _, r := range recs {
		client, err1 := netip.ParseAddr(r.Client)
		addr, err2 := netip.ParseAddr(r.Addr)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("statics entry %q: %w", r.Client, err)
		}
		out = append(out, messages.Static{Client: client, Addr: addr, Rate: r.Rate})
	}
	return out, nil
}

func encodeStatics(table []messages.Static) string {
	recs := make([]staticRecord, len(table))
	for i, r := range table {
		recs[i] = staticRecord{Client: r.Client.String(), Addr: r.Addr.String(), Rate: r.Rate}
	}
	return encode(recs)
}

func (v *fleetView) applyMove(src netip.Addr, e fleetEvent) bool {
	if e.Deleted {
		delete(v.moves, src)
		return true
	}
	var r moveRecord
	if json.Unmarshal(e.Value, &r) != nil || r.Node == "" {
		return false
	}
	v.moves[src] = r
	return true
}

// blockOf is the first address of the block that holds a.
func (v *fleetView) blockOf(a netip.Addr) netip.Addr {
	p, _ := a.Prefix(v.bits)
	return p.Addr()
}

// owner says which node may lease a: the holder of its /32 claim, else
// the holder of its block ("" when neither).
func (v *fleetView) owner(a netip.Addr) string {
	if n, ok := v.claims[a]; ok {
		return n
	}
	return v.blocks[v.blockOf(a)]
}

// blocksOf lists the blocks node holds, sorted.
func (v *fleetView) blocksOf(node string) []netip.Prefix {
	var out []netip.Prefix
	for first, n := range v.blocks {
		if n == node {
			out = append(out, netip.PrefixFrom(first, v.bits))
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// claimsOf lists the single addresses node holds, sorted.
func (v *fleetView) claimsOf(node string) []netip.Addr {
	var out []netip.Addr
	for a, n := range v.claims {
		if n == node {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// peers is the data plane's desired state: every other live node with
// the blocks and claims it holds.
func (v *fleetView) peers(self string) []FleetPeer {
	var out []FleetPeer
	for name, r := range v.nodes {
		if name == self {
			continue
		}
		under, err := netip.ParseAddr(r.Addr)
		if err != nil {
			continue
		}
		p := FleetPeer{Name: name, Underlay: under, MAC: parseMAC(r.MAC)}
		p.Prefixes = v.blocksOf(name)
		for _, a := range v.claimsOf(name) {
			p.Prefixes = append(p.Prefixes, netip.PrefixFrom(a, 32))
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b FleetPeer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// localClaims are self's claims inside blocks that other nodes hold: they
// need a /32 route to the TUN ahead of the peer's block route.
func (v *fleetView) localClaims(self string) []netip.Addr {
	var out []netip.Addr
	for _, a := range v.claimsOf(self) {
		if n, ok := v.blocks[v.blockOf(a)]; ok && n != self {
			out = append(out, a)
		}
	}
	return out
}
