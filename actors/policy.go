package actors

// Access policy: which connections the Supervisor admits before any
// session exists (-allow, bans) and what counts as one source of them
// (-source-prefix) for -max-per-source, bans and the pool's grace
// stickiness. Plain code, so it can be table-tested; the Supervisor owns
// the one banList of a server as actor state.

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// DefaultSourcePrefix counts every client IPv6 address as its own source,
// right for a campus lab where the students share one /64.
const DefaultSourcePrefix = 128

// maxBans bounds the ban table, so kicks with long bans cannot grow the
// Supervisor's memory without limit; expired bans are pruned first.
const maxBans = 4096

// ErrTooManyBans: the ban table is full of bans that have not expired; the
// kick that asked for one more is refused as a whole (nothing kicked).
var ErrTooManyBans = errors.New("too many active bans")

// sourceOf is what counts as one source of connections: the client's
// address cut to its first bits (-source-prefix; 0 or out of range means
// 128). An IPv4 client (seen as an IPv4-mapped address on a dual-stack
// listener) is always a source of its own: a /64 means nothing for IPv4,
// and lumping all IPv4 clients into ::ffff:0:0/64 would make them one.
// Zones are dropped, so a link-local client is one source on any link.
func sourceOf(addr netip.Addr, bits int) netip.Prefix {
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() {
		return netip.Prefix{}
	}
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	if bits <= 0 || bits > 128 {
		bits = 128
	}
	p, _ := addr.Prefix(bits) // cannot fail: bits is within 1..128 for an IPv6 address
	return p
}

// allowedBy reports whether a client may connect under -allow: an empty
// list allows everyone. The client is unmapped first, so an IPv4 client of
// a dual-stack listener matches an IPv4 prefix of the list (and none of
// its IPv6 ones).
func allowedBy(allow []netip.Prefix, addr netip.Addr) bool {
	if len(allow) == 0 {
		return true
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// normalizeAllow masks every prefix and writes IPv4-mapped ones
// (::ffff:192.0.2.0/120) as the IPv4 prefixes they mean (192.0.2.0/24),
// since client addresses are unmapped before they are matched. Invalid
// prefixes are kept for validate to report.
func normalizeAllow(allow []netip.Prefix) []netip.Prefix {
	if len(allow) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(allow))
	for _, p := range allow {
		if a := p.Addr(); p.IsValid() && a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		if p.IsValid() {
			p = p.Masked()
		}
		out = append(out, p)
	}
	return out
}

// banList holds the sources a kick banned and until when. It is the
// Supervisor's state (no locks); every method takes the time, so tests
// can drive it with a fake clock.
type banList struct {
	until map[netip.Prefix]time.Time
	max   int
}

func newBanList(max int) *banList {
	return &banList{until: make(map[netip.Prefix]time.Time), max: max}
}

// add bans src until the given time and returns when its ban ends: a ban
// already in place that ends later stays (a second kick never shortens a
// ban). When the table is full even after pruning, nothing changes and
// the error wraps ErrTooManyBans.
func (b *banList) add(src netip.Prefix, until, now time.Time) (time.Time, error) {
	if cur, ok := b.until[src]; ok && now.Before(cur) {
		if cur.After(until) {
			return cur, nil
		}
		b.until[src] = until
		return until, nil
	}
	if len(b.until) >= b.max {
		b.prune(now)
	}
	if len(b.until) >= b.max {
		return time.Time{}, fmt.Errorf("failed to ban %v: %w (%d)", src, ErrTooManyBans, b.max)
	}
	b.until[src] = until
	return until, nil
}

// banned reports whether src is banned at now and until when; a ban that
// has ended is removed.
func (b *banList) banned(src netip.Prefix, now time.Time) (time.Time, bool) {
	until, ok := b.until[src]
	if !ok {
		return time.Time{}, false
	}
	if !now.Before(until) {
		delete(b.until, src)
		return time.Time{}, false
	}
	return until, true
}

// prune removes every ban that has ended at now.
func (b *banList) prune(now time.Time) {
	for src, until := range b.until {
		if !now.Before(until) {
			delete(b.until, src)
		}
	}
}

// len is the number of bans held, ended or not.
func (b *banList) len() int { return len(b.until) }
