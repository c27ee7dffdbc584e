package main

// The -server list. Each entry is an IPv6 literal or a name, with a port;
// a name may stand for several servers (AAAA records). The client walks the
// list one server address per connection attempt:
//
//   - An attempt that fails to connect or to lease moves on to the next
//     address: the next one of the same name, then the next entry, around
//     the list, each attempt after the usual backoff wait.
//   - A name is resolved (IPv6 only) when the walk enters its entry, so
//     that DNS changes are followed; its addresses are then tried in the
//     resolver's order. A name that does not resolve counts as a failed
//     attempt.
//   - After a session that was connected ends, and after SIGHUP, the walk
//     starts again from the server of the last connected session (its
//     entry resolved again, that address first if it is still listed), so
//     a client stays on the server that worked and moves only when it
//     fails. Before any session connected, it starts from the first entry.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// serverEntry is one element of -server.
type serverEntry struct {
	host string
	port uint16
	// literal is the address when host is an IPv6 literal, which is used
	// as it is, without the resolver.
	literal netip.Addr
}

func (e serverEntry) String() string {
	return net.JoinHostPort(e.host, strconv.Itoa(int(e.port)))
}

// parseServers reads the -server value: host:port entries separated by
// commas. An address literal must be IPv6, because the tunnel runs over
// IPv6 and dialling an IPv4 server would send the tunnel through its own
// routes.
func parseServers(s string) ([]serverEntry, error) {
	if s == "" {
		return nil, errors.New("-server is required, e.g. -server [2001:db8::1]:5678")
	}
	var entries []serverEntry
	for _, f := range strings.Split(s, ",") {
		e, err := parseServer(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if slices.Contains(entries, e) {
			return nil, fmt.Errorf("-server %q: %s is listed twice", s, e)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func parseServer(s string) (serverEntry, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return serverEntry{}, fmt.Errorf("-server %q: want [IPv6]:port or host:port, several separated by commas", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return serverEntry{}, fmt.Errorf("-server %q: port %q is not a number in 1-65535", s, port)
	}
	e := serverEntry{host: host, port: uint16(n)}
	if a, err := netip.ParseAddr(host); err == nil {
		if !usableServerAddr(a) {
			return serverEntry{}, fmt.Errorf("-server %q: the tunnel runs over IPv6, want an IPv6 address", s)
		}
		e.literal = a
	}
	return e, nil
}

// usableServerAddr rejects addresses that would carry the tunnel over
// IPv4, whether written by the user or returned by DNS.
func usableServerAddr(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6()
}

// target is one server address to connect to, and the entry it came from.
type target struct {
	entry serverEntry
	addr  netip.AddrPort
}

// String names the target in logs: the address, and the name it was
// resolved from, if any.
func (t target) String() string {
	if t.entry.literal.IsValid() {
		return t.addr.String()
	}
	return t.addr.String() + " (" + t.entry.String() + ")"
}

// lookupFunc resolves a name to its IPv6 addresses.
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// lookupIPv6 asks the system resolver for AAAA records only.
func lookupIPv6(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip6", host)
}

// serverWalk is the walk over the -server list described at the top of
// this file. It is used by the reconnect loop only, so it needs no locking.
type serverWalk struct {
	entries []serverEntry
	lookup  lookupFunc
	cur     int              // the entry being walked
	entered bool             // cur's addresses have been resolved in this pass
	pending []netip.AddrPort // cur's addresses not yet tried in this pass
	// good is the target of the last connected session; valid tells
	// whether there was one.
	good  target
	valid bool
	// prefer is moved to the front when cur is next resolved.
	prefer netip.AddrPort
}

func newServerWalk(entries []serverEntry, lookup lookupFunc) *serverWalk {
	return &serverWalk{entries: entries, lookup: lookup}
}

// next returns the address of the next attempt. An error means the entry
// it names did not resolve to a usable address; the call after that moves
// on to the next entry.
func (w *serverWalk) next(ctx context.Context) (target, error) {
	if len(w.pending) == 0 {
		if w.entered {
			w.cur = (w.cur + 1) % len(w.entries)
		}
		w.entered = true
		addrs, err := w.resolve(ctx, w.entries[w.cur])
		moveFirst(addrs, w.prefer)
		w.prefer = netip.AddrPort{}
		if err != nil {
			return target{entry: w.entries[w.cur]}, err
		}
		w.pending = addrs
	}
	t := target{entry: w.entries[w.cur], addr: w.pending[0]}
	w.pending = w.pending[1:]
	return t, nil
}

// connected records the target of a session that leased an address and
// starts the walk again from it, for when that session ends.
func (w *serverWalk) connected(t target) {
	w.good, w.valid = t, true
	w.restart()
}

// restart makes the next attempt go to the last connected server, or to
// the first entry before any session connected.
func (w *serverWalk) restart() {
	w.cur, w.entered, w.pending, w.prefer = 0, false, nil, netip.AddrPort{}
	if w.valid {
		w.cur = slices.Index(w.entries, w.good.entry)
		w.prefer = w.good.addr
	}
}

// resolve returns the addresses of e, without duplicates and without
// anything that is not a usable IPv6 address.
func (w *serverWalk) resolve(ctx context.Context, e serverEntry) ([]netip.AddrPort, error) {
	if e.literal.IsValid() {
		return []netip.AddrPort{netip.AddrPortFrom(e.literal, e.port)}, nil
	}
	addrs, err := w.lookup(ctx, e.host)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve %s: %w", e.host, err)
	}
	var out []netip.AddrPort
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, e.port)
		if usableServerAddr(a) && !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("failed to resolve %s: no usable IPv6 address in %v", e.host, addrs)
	}
	return out, nil
}

// moveFirst moves want to the front of addrs if it is there, keeping the
// others in order.
func moveFirst(addrs []netip.AddrPort, want netip.AddrPort) {
	if i := slices.Index(addrs, want); i > 0 {
		copy(addrs[1:i+1], addrs[:i])
		addrs[0] = want
	}
}
