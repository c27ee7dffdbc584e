package actors

import (
	"net/netip"
	"slices"

	"github.com/4over6d/4over6d/messages"
)

// staticTable is the allocator's record of the operator's fixed addresses
// (messages.Static): at most one per client IPv6 address and one per IPv4
// address. Unlike grace reservations they never lapse and are never lent
// to anyone else, not even when the pool is otherwise full.
//
// It is kept apart from the grace bookkeeping (reserved, byClient) so the
// two policies can change independently. The zero value is an empty table.
type staticTable struct {
	byAddr   map[netip.Addr]messages.Static
	byClient map[netip.Addr]netip.Addr // client IPv6 (no zone) -> IPv4
}

// staticKey is how a client's address is looked up: a zone (a link-local
// peer) is part of the socket address, not of the client's identity.
func staticKey(client netip.Addr) netip.Addr { return client.WithZone("") }

// staticFor returns the reservation of client, if it has one.
func (a *allocator) staticFor(client netip.Addr) (messages.Static, bool) {
	addr, ok := a.static.byClient[staticKey(client)]
	if !ok {
		return messages.Static{}, false
	}
	return a.static.byAddr[addr], true
}

// staticAt returns the reservation of addr, if it has one.
func (a *allocator) staticAt(addr netip.Addr) (messages.Static, bool) {
	r, ok := a.static.byAddr[addr]
	return r, ok
}

// isStatic reports whether addr is set aside for some client.
func (a *allocator) isStatic(addr netip.Addr) bool {
	_, ok := a.static.byAddr[addr]
	return ok
}

// staticBlocks reports whether addr is reserved for a client other than
// client, and so may not be leased to client.
func (a *allocator) staticBlocks(addr, client netip.Addr) bool {
	r, ok := a.static.byAddr[addr]
	return ok && r.Client != staticKey(client)
}

// leasable is what any client without a reservation for the address may
// be given: free, and nobody's static address.
func (a *allocator) leasable(addr netip.Addr) bool {
	return a.isFree(addr) && !a.isStatic(addr) && (a.usable == nil || a.usable(addr))
}

// allocateStatic leases client's reserved address to owner if client has
// one and it is free (another session of the same client may hold it:
// then the client gets an ordinary address).
func (a *allocator) allocateStatic(owner string, client netip.Addr) (netip.Addr, bool) {
	r, ok := a.staticFor(client)
	if !ok || !a.isFree(r.Addr) || (a.staticOK != nil && !a.staticOK(r.Addr)) {
		return netip.Addr{}, false
	}
	a.take(owner, r.Addr)
	return r.Addr, true
}

// holder returns the owner leasing addr now.
func (a *allocator) holder(addr netip.Addr) (string, bool) {
	owner, ok := a.byAddr[addr]
	return owner, ok
}

// setStatic adds or replaces the reservation of r.Client. The caller has
// checked that r is valid and conflicts with nobody (see checkStatic and
// AddressPool.staticConflict). A grace reservation of another client for
// r.Addr gives way and is returned, so the caller can log it.
func (a *allocator) setStatic(r messages.Static) (dropped messages.Reservation, hadGrace bool) {
	if a.static.byAddr == nil {
		a.static.byAddr = make(map[netip.Addr]messages.Static)
		a.static.byClient = make(map[netip.Addr]netip.Addr)
	}
	r.Client = staticKey(r.Client)
	a.removeStatic(r.Client)
	a.static.byAddr[r.Addr] = r
	a.static.byClient[r.Client] = r.Addr
	if g, ok := a.reserved[r.Addr]; ok && g.client.WithZone("") != r.Client {
		a.unreserve(r.Addr, g)
		return messages.Reservation{Client: g.client, Addr: r.Addr, Until: g.until}, true
	}
	return messages.Reservation{}, false
}

// removeStatic drops client's reservation. A session holding the address
// keeps it; once released it is an ordinary address again.
func (a *allocator) removeStatic(client netip.Addr) (messages.Static, bool) {
	addr, ok := a.static.byClient[staticKey(client)]
	if !ok {
		return messages.Static{}, false
	}
	r := a.static.byAddr[addr]
	delete(a.static.byAddr, addr)
	delete(a.static.byClient, r.Client)
	return r, true
}

// clearStatics drops every reservation (a reload replaces the set).
func (a *allocator) clearStatics() {
	clear(a.static.byAddr)
	clear(a.static.byClient)
}

// statics lists the reservations sorted by client address.
func (a *allocator) statics() []messages.Static {
	out := make([]messages.Static, 0, len(a.static.byAddr))
	for _, r := range a.static.byAddr {
		out = append(out, r)
	}
	slices.SortFunc(out, func(x, y messages.Static) int { return x.Client.Compare(y.Client) })
	return out
}

// staticIdle counts the reserved addresses no session holds: they are
// neither leased nor available to other clients.
func (a *allocator) staticIdle() int {
	n := 0
	for addr := range a.static.byAddr {
		if a.isFree(addr) {
			n++
		}
	}
	return n
}
