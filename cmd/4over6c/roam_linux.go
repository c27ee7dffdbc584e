package main

// Roaming: while a session runs, pathWatcher follows the kernel's address
// and route notifications (netlink) and ends the session as soon as the
// connection's network path is gone, instead of leaving it to the
// dead-link timeout (-timeout, 60 s by default). The path is gone when
//
//   - the connection's local IPv6 address is no longer assigned (deleted,
//     or its interface went down), or
//   - the kernel has no route to the server any more (unreachable,
//     blackhole and prohibit routes included), or
//   - the route to the server now leaves by another interface and would
//     give a new connection another source address (moving from Wi-Fi to
//     Ethernet).
//
// Anything else is ignored: IPv4 routes (the TUN's own, among others),
// routes that do not cover the server, new addresses, and a new preferred
// source on the same interface (a new temporary address): the server keys
// its leases by the client's IPv6 address, so a needless reconnect from
// another address would cost the client its IPv4 address.
//
// Every relevant notification leads to a fresh look at the kernel's state
// (the address list and a route lookup to the server), compared with the
// one taken when the watch began, so missed or reordered notifications do
// no harm. The session's end goes through the normal reconnect loop: an
// immediate reconnect after a session that lasted, the backoff otherwise,
// so a network that is simply gone is not hammered.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Bounds of the watch: the notification queue, and how often a
// subscription that the kernel ended (its socket overflowed) is renewed
// within one session before the watch gives up and leaves the session to
// the dead-link timeout.
const (
	roamQueue      = 64
	roamResubLimit = 5
)

// pathWatcher watches the network path of a session's connection; each
// watch call is independent and owns what it opens.
type pathWatcher struct {
	// ns is the network namespace to watch; netns.None() is the one the
	// client runs in. A field so tests can watch a namespace they made.
	ns  netns.NsHandle
	log *slog.Logger
	// watching, if set, is called once the watch has subscribed and
	// taken its first look, so a test knows when changes count.
	watching func()
}

func newPathWatcher(log *slog.Logger) *pathWatcher {
	return &pathWatcher{ns: netns.None(), log: log}
}

// pathView is the kernel's answer, at one moment, to "could this
// connection still work, and would a new one go the same way?".
type pathView struct {
	// unknown is set when the kernel could not be asked; no conclusion
	// is drawn from such a view.
	unknown  error
	hasLocal bool
	// noRoute is the route lookup's error when it says the server is
	// unreachable.
	noRoute error
	oif     int
	src     netip.Addr
}

// watch returns an errPathLost error once the path from local to remote
// is gone, or nil when ctx ends. When the kernel cannot be watched, it
// logs why and returns nil at once: the session then ends by the dead-link
// timeout as before.
func (w *pathWatcher) watch(ctx context.Context, local, remote netip.Addr) error {
	local, remote = local.WithZone(""), remote.WithZone("")
	h, err := netlink.NewHandleAt(w.ns, unix.NETLINK_ROUTE)
	if err != nil {
		w.log.Warn("failed to open netlink: roaming is not followed", slog.Any("err", err))
		return nil
	}
	defer h.Close()
	sub, err := w.subscribe()
	if err != nil {
		w.log.Warn("roaming is not followed", slog.Any("err", err))
		return nil
	}
	defer func() { sub.close() }()
	// The first look comes after subscribing, so no change is missed in
	// between.
	base := look(h, local, remote)
	if ok, lost := w.usable(local, base); !ok {
		return lost
	}
	if w.watching != nil {
		w.watching()
	}
	for renewed := 0; ; renewed++ {
		if lost := follow(ctx, h, sub, local, remote, base); lost != nil || ctx.Err() != nil {
			return lost
		}
		// The kernel ended a subscription (its socket overflowed): renew
		// both; the first look after that catches what was missed.
		if renewed == roamResubLimit {
			w.log.Warn("netlink subscription keeps ending: roaming is not followed for this session")
			return nil
		}
		sub.close()
		if sub, err = w.subscribe(); err != nil {
			w.log.Warn("roaming is no longer followed", slog.Any("err", err))
			return nil
		}
	}
}

// usable tells whether the path can be watched from base. If not, the
// path is either gone already (the error) or not understood (nil).
func (w *pathWatcher) usable(local netip.Addr, base pathView) (bool, error) {
	switch {
	case base.unknown == nil && !base.hasLocal:
		return false, lostPath(local, base, base) // gone before the watch began
	case base.unknown != nil || base.noRoute != nil:
		// A connection that works although the kernel says it cannot
		// (policy routing by socket mark, say) is a set-up this code does
		// not understand: leave it alone.
		w.log.Debug("no usable view of the path to the server: roaming is not followed",
			slog.Any("err", errors.Join(base.unknown, base.noRoute)))
		return false, nil
	}
	return true, nil
}

// follow looks at the path after every notification that matters, until
// it is lost (the error), ctx ends or a subscription ends (nil).
func follow(ctx context.Context, h *netlink.Handle, sub *subscription, local, remote netip.Addr, base pathView) error {
	for {
		if err := lostPath(local, base, look(h, local, remote)); err != nil {
			return err
		}
		if !sub.wait(ctx, local, remote) {
			return nil
		}
	}
}

// lostPath compares the path now with base, the path when the watch
// began, and says why the connection from local cannot go on, or nil.
func lostPath(local netip.Addr, base, now pathView) error {
	switch {
	case now.unknown != nil:
		return nil
	case !now.hasLocal:
		return fmt.Errorf("%w: local address %v removed", errPathLost, local)
	case now.noRoute != nil:
		return fmt.Errorf("%w: no route to the server (%w)", errPathLost, now.noRoute)
	case now.oif != base.oif && now.src.IsValid() && now.src != local:
		return fmt.Errorf("%w: the route to the server moved to interface %d, source %v instead of %v",
			errPathLost, now.oif, now.src, local)
	}
	return nil
}

// look asks the kernel about the path from local to remote.
func look(h *netlink.Handle, local, remote netip.Addr) pathView {
	var v pathView
	addrs, err := h.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		v.unknown = fmt.Errorf("failed to list addresses: %w", err)
		return v
	}
	v.hasLocal = slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return ipIs(a.IP, local) })
	routes, err := h.RouteGet(remote.AsSlice())
	switch {
	case unreachable(err):
		v.noRoute = err
	case err != nil:
		v.unknown = fmt.Errorf("failed to look up the route to %v: %w", remote, err)
	case len(routes) > 0:
		v.oif = routes[0].LinkIndex
		v.src, _ = netip.AddrFromSlice(routes[0].Src)
	}
	return v
}

// unreachable tells the route lookup errors that mean no packet reaches
// the server: no route (ENETUNREACH), and unreachable (EHOSTUNREACH),
// prohibit (EACCES) and blackhole (EINVAL) routes.
func unreachable(err error) bool {
	for _, e := range []error{unix.ENETUNREACH, unix.EHOSTUNREACH, unix.EACCES, unix.EINVAL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func ipIs(ip net.IP, a netip.Addr) bool {
	b, ok := netip.AddrFromSlice(ip)
	return ok && b.Unmap() == a
}

// addrMatters keeps the notifications that can take the connection's
// address away: its deletion.
func addrMatters(u netlink.AddrUpdate, local netip.Addr) bool {
	return !u.NewAddr && ipIs(u.LinkAddress.IP, local)
}

// routeMatters keeps the IPv6 route changes that can change the route to
// remote: those whose destination covers it. IPv4 routes, the TUN's
// included, never do.
func routeMatters(u netlink.RouteUpdate, remote netip.Addr) bool {
	if u.Family != netlink.FAMILY_V6 {
		return false
	}
	if u.Dst == nil {
		return true // a default route
	}
	return u.Dst.Contains(remote.AsSlice())
}

// subscription is one pair of netlink subscriptions, addresses and
// routes. The library runs a goroutine for each that sends on the channel
// until done is closed; close stops them and waits for both to finish.
type subscription struct {
	done   chan struct{}
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
	// started tells close which channels the library will close.
	addrsStarted, routesStarted bool
}

func (w *pathWatcher) subscribe() (*subscription, error) {
	s := &subscription{
		done:   make(chan struct{}),
		addrs:  make(chan netlink.AddrUpdate, roamQueue),
		routes: make(chan netlink.RouteUpdate, roamQueue),
	}
	onError := func(err error) {
		select {
		case <-s.done: // the socket closed by close: expected
		default:
			w.log.Warn("netlink notification error", slog.Any("err", err))
		}
	}
	err := netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{Namespace: &w.ns, ErrorCallback: onError})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("failed to subscribe to address changes: %w", err)
	}
	s.addrsStarted = true
	err = netlink.RouteSubscribeWithOptions(s.routes, s.done, netlink.RouteSubscribeOptions{Namespace: &w.ns, ErrorCallback: onError})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("failed to subscribe to route changes: %w", err)
	}
	s.routesStarted = true
	return s, nil
}

// wait returns true at the next notification that matters, false when ctx
// ends or the kernel ends a subscription (a channel closed).
func (s *subscription) wait(ctx context.Context, local, remote netip.Addr) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case u, ok := <-s.addrs:
			if !ok {
				s.addrsStarted = false
				return false
			}
			if addrMatters(u, local) {
				return true
			}
		case u, ok := <-s.routes:
			if !ok {
				s.routesStarted = false
				return false
			}
			if routeMatters(u, remote) {
				return true
			}
		}
	}
}

// close ends the subscriptions and drains their channels until the
// library's goroutines have closed them, so none is left blocked on a send.
func (s *subscription) close() {
	if s == nil {
		return
	}
	close(s.done)
	if s.addrsStarted {
		for range s.addrs {
		}
	}
	if s.routesStarted {
		for range s.routes {
		}
	}
}
