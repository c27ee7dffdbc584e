package actors

import (
	"net/netip"
	"time"

	"github.com/4over6d/4over6d/messages"
)

// allocator is the address pool's bookkeeping, kept free of actors so it
// can be table-tested. Owners are opaque strings (session PID ids).
//
// Reuse policy: a released address is reserved for the client's source
// (its IPv6 address, or its /N under -source-prefix N; see sourceOf) that
// held it until the grace period ends, so a reconnecting client gets
// its old address back; other clients get unreserved addresses first, and
// a reserved one only when nothing else is free (serving a new client
// beats keeping a promise to one that may never return).
//
// Static reservations (allocator_static.go) come before all of that: a
// client with one gets its address whenever it is free, and nobody else
// ever gets it.
type allocator struct {
	first, last netip.Addr // leasable range, inclusive
	size        int
	next        netip.Addr // round-robin cursor: spreads reuse out in time
	grace       time.Duration
	byAddr      map[netip.Addr]string
	byOwner     map[string]netip.Addr
	reserved    map[netip.Addr]reservation
	byClient    map[netip.Addr]netip.Addr // client source (see key) -> reserved IPv4
	// sourceBits is -source-prefix: clients with the same first bits share
	// a grace reservation (0 means 128, one per address).
	sourceBits int
	static     staticTable
	// usable, in a fleet, says which addresses this node may lease now
	// (in its blocks or claims, bound to nobody else); nil allows all.
	usable func(netip.Addr) bool
	// staticOK, in a fleet, says whether a client's static address may be
	// bound here now (it may lie in another node's block).
	staticOK func(netip.Addr) bool
	// blocks, in a fleet, are the prefixes this node leases from: a scan
	// looks only there, lowest first, instead of walking a pool that is
	// mostly other nodes' (nil: the whole pool, from the cursor).
	blocks func() []netip.Prefix
}

type reservation struct {
	client netip.Addr
	until  time.Time
}

// newAllocator leases prefix's hosts except the first (the server's) and the
// network and broadcast addresses.
func newAllocator(prefix netip.Prefix, grace time.Duration) *allocator {
	network := prefix.Masked().Addr()
	first := network.Next().Next()
	last := broadcast(prefix).Prev()
	return &allocator{
		first:    first,
		last:     last,
		size:     1<<(32-prefix.Bits()) - 3,
		next:     first,
		grace:    grace,
		byAddr:   make(map[netip.Addr]string),
		byOwner:  make(map[string]netip.Addr),
		reserved: make(map[netip.Addr]reservation),
		byClient: make(map[netip.Addr]netip.Addr),
	}
}

func broadcast(p netip.Prefix) netip.Addr {
	host := uint32(1)<<(32-p.Bits()) - 1
	return u32ToAddr(addrToU32(p.Masked().Addr()) | host)
}

// allocate gives owner an address: the one it already has, else client's
// static one, else the one reserved for client, else a free one that is
// nobody's static address. ok is false when the pool is full.
func (a *allocator) allocate(owner string, client netip.Addr, now time.Time) (netip.Addr, bool) {
	if addr, ok := a.byOwner[owner]; ok {
		return addr, true
	}
	if addr, ok := a.allocateStatic(owner, client); ok {
		return addr, true
	}
	if addr, ok := a.byClient[a.key(client)]; ok && a.isFree(addr) && !a.staticBlocks(addr, client) && (a.usable == nil || a.usable(addr)) {
		a.take(owner, addr)
		return addr, true
	}
	if addr, ok := a.scan(func(x netip.Addr) bool { return a.leasable(x) && !a.isReserved(x, now) }); ok {
		a.take(owner, addr)
		return addr, true
	}
	if addr, ok := a.scan(a.leasable); ok {
		a.take(owner, addr)
		return addr, true
	}
	return netip.Addr{}, false
}

// claim records that owner already holds addr (a live session restating
// its lease to a restarted pool). It fails if someone else holds addr.
func (a *allocator) claim(owner string, addr netip.Addr) bool {
	if !a.inRange(addr) {
		return false
	}
	if cur, ok := a.byAddr[addr]; ok {
		return cur == owner
	}
	if old, ok := a.byOwner[owner]; ok && old != addr {
		return false
	}
	a.take(owner, addr)
	return true
}

// release frees owner's address and reserves it for client. It reports the
// address released, if any; releasing twice is harmless.
func (a *allocator) release(owner string, client netip.Addr, now time.Time) (netip.Addr, bool) {
	addr, ok := a.byOwner[owner]
	if !ok {
		return netip.Addr{}, false
	}
	delete(a.byOwner, owner)
	delete(a.byAddr, addr)
	if client.IsValid() && a.grace > 0 {
		if old, ok := a.byClient[a.key(client)]; ok {
			delete(a.reserved, old)
		}
		a.reserved[addr] = reservation{client: client, until: now.Add(a.grace)}
		a.byClient[a.key(client)] = addr
	}
	return addr, true
}

func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// drop frees owner's address without reserving it (a lease that etcd
// refused, or an address handed to another node).
func (a *allocator) drop(owner string) {
	if addr, ok := a.byOwner[owner]; ok {
		delete(a.byOwner, owner)
		delete(a.byAddr, addr)
	}
}

// forget removes addr's grace reservation, if any.
func (a *allocator) forget(addr netip.Addr) {
	if r, ok := a.reserved[addr]; ok {
		a.unreserve(addr, r)
	}
}

func (a *allocator) take(owner string, addr netip.Addr) {
	a.byAddr[addr] = owner
	a.byOwner[owner] = addr
	if r, ok := a.reserved[addr]; ok {
		a.unreserve(addr, r)
	}
}

// key is the client's source, which grace reservations are kept for.
func (a *allocator) key(client netip.Addr) netip.Addr {
	return sourceOf(client, a.sourceBits).Addr()
}

// unreserve drops the reservation r of addr and its index entry.
func (a *allocator) unreserve(addr netip.Addr, r reservation) {
	delete(a.reserved, addr)
	if k := a.key(r.client); a.byClient[k] == addr {
		delete(a.byClient, k)
	}
}

func (a *allocator) isFree(addr netip.Addr) bool {
	_, used := a.byAddr[addr]
	return !used
}

func (a *allocator) isReserved(addr netip.Addr, now time.Time) bool {
	r, ok := a.reserved[addr]
	if ok && !now.Before(r.until) {
		a.unreserve(addr, r)
		return false
	}
	return ok
}

func (a *allocator) inRange(addr netip.Addr) bool {
	return addr.Is4() && a.first.Compare(addr) <= 0 && addr.Compare(a.last) <= 0
}

// scan walks the range once from the cursor and returns the first address
// for which ok holds, advancing the cursor past it.
func (a *allocator) scan(ok func(netip.Addr) bool) (netip.Addr, bool) {
	if len(a.byAddr) >= a.size {
		return netip.Addr{}, false
	}
	if a.blocks != nil {
		return a.scanBlocks(ok)
	}
	x := a.next
	for range a.size {
		cand := x
		if x = x.Next(); !a.inRange(x) {
			x = a.first
		}
		if ok(cand) {
			a.next = x
			return cand, true
		}
	}
	return netip.Addr{}, false
}

func (a *allocator) scanBlocks(ok func(netip.Addr) bool) (netip.Addr, bool) {
	for _, b := range a.blocks() {
		for x := b.Masked().Addr(); b.Contains(x); x = x.Next() {
			if a.inRange(x) && ok(x) {
				return x, true
			}
		}
	}
	return netip.Addr{}, false
}

// leased is the number of addresses in use.
func (a *allocator) leased() int { return len(a.byAddr) }

// reserve seeds a reservation (from the lease file); addresses out of range
// or already taken are ignored.
func (a *allocator) reserve(r messages.Reservation) {
	if !a.inRange(r.Addr) || !a.isFree(r.Addr) {
		return
	}
	if old, ok := a.byClient[a.key(r.Client)]; ok {
		delete(a.reserved, old)
	}
	if prev, ok := a.reserved[r.Addr]; ok {
		a.unreserve(r.Addr, prev)
	}
	a.reserved[r.Addr] = reservation{client: r.Client, until: r.Until}
	a.byClient[a.key(r.Client)] = r.Addr
}

// reservations lists the unexpired reservations.
func (a *allocator) reservations(now time.Time) []messages.Reservation {
	out := make([]messages.Reservation, 0, len(a.reserved))
	for addr, r := range a.reserved {
		if now.Before(r.until) {
			out = append(out, messages.Reservation{Client: r.client, Addr: addr, Until: r.until})
		}
	}
	return out
}
