package main

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun"
)

// hostNetwork is the real network: a kernel TUN device with routes through
// it and, with -dns-apply, the host's resolvers. It is used by the reconnect
// loop only, so it needs no locking.
type hostNetwork struct {
	o      *options
	log    *slog.Logger
	dns    dnsBackend
	dev    *tun.Linux
	addr   netip.Addr
	routes []netip.Prefix
	// warnedRoute is the last server route logged as not installed, so it
	// is logged once rather than on every reconnect.
	warnedRoute netip.Addr
}

var _ network = (*hostNetwork)(nil)

func newHostNetwork(o *options, log *slog.Logger) *hostNetwork {
	return &hostNetwork{o: o, log: log, dns: newDNSBackend(o, hostDNSEnv(o.dnsState), log)}
}

// Attach opens the TUN with the leased address, or gives the existing one
// the new address if the lease changed, then brings routes and DNS in line
// with the lease. A failure to apply DNS is logged, not fatal: the tunnel
// works without it.
func (h *hostNetwork) Attach(lease wire.IPReply) (tun.Device, error) {
	if err := h.ensureDevice(lease.Addr); err != nil {
		return nil, err
	}
	if err := h.setRoutes(h.routesFor(lease)); err != nil {
		return nil, err
	}
	if h.dns != nil {
		if err := h.dns.Apply(lease.DNS); err != nil {
			h.log.Warn("failed to apply DNS servers", slog.Any("err", err))
		}
	}
	return h.dev, nil
}

func (h *hostNetwork) ensureDevice(addr netip.Addr) error {
	if h.dev == nil {
		dev, err := tun.OpenClient(tun.ClientConfig{Name: h.o.tun, MTU: h.o.mtu, Addr: addr, Offload: h.o.offload})
		if err != nil {
			return err
		}
		if on, why := dev.Offload(); h.o.offload && !on {
			h.log.Warn("TUN offloads unavailable; every packet costs its own system call", slog.Any("err", why))
		} else if udpOn, why := dev.UDPOffload(); on && !udpOn {
			h.log.Warn("TUN UDP segmentation offload unavailable; every UDP datagram costs its own system call", slog.Any("err", why))
		}
		h.dev, h.addr, h.routes = dev, addr, nil
		return nil
	}
	if addr == h.addr {
		return nil
	}
	if err := h.dev.ReplaceAddr(addr); err != nil {
		return err
	}
	h.log.Info("leased address changed", slog.String("tun", h.dev.Name()), slog.String("old", h.addr.String()), slog.String("new", addr.String()))
	h.addr = addr
	return nil
}

// routesFor decides which routes go through the TUN for a lease.
func (h *hostNetwork) routesFor(lease wire.IPReply) []netip.Prefix {
	switch h.o.routeMode {
	case routeList:
		return h.o.routes
	case routeNone:
		return nil
	}
	if lease.Route.IsUnspecified() {
		return def1
	}
	if lease.Route != h.warnedRoute {
		h.warnedRoute = lease.Route
		h.log.Warn("server route field is not 0.0.0.0: installing no routes through the tunnel (choose them with -routes)",
			slog.String("route", lease.Route.String()))
	}
	return nil
}

// setRoutes removes routes no longer wanted and (re)installs the wanted
// ones; reinstalling is harmless, since AddRoutes replaces.
func (h *hostNetwork) setRoutes(want []netip.Prefix) error {
	var stale []netip.Prefix
	for _, p := range h.routes {
		if !slices.Contains(want, p) {
			stale = append(stale, p)
		}
	}
	if err := h.dev.DeleteRoutes(stale); err != nil {
		return err
	}
	// Recorded first, so Close also removes a partly installed set.
	h.routes = want
	return h.dev.AddRoutes(want)
}

// Discard closes a failed device; its routes go with it.
func (h *hostNetwork) Discard() {
	if h.dev == nil {
		return
	}
	if err := h.dev.Close(); err != nil {
		h.log.Warn("failed to close failed TUN device", slog.Any("err", err))
	}
	h.dev, h.addr, h.routes = nil, netip.Addr{}, nil
}

// Close restores DNS and removes the routes and the TUN, leaving the host
// as it was before the client started. DNS goes first, while the TUN link
// that systemd-resolved keeps its settings on still exists.
func (h *hostNetwork) Close() error {
	var errs []error
	if h.dns != nil {
		errs = append(errs, h.dns.Restore())
	}
	if h.dev != nil {
		errs = append(errs, h.dev.DeleteRoutes(h.routes), h.dev.Close())
		h.dev, h.routes = nil, nil
	}
	return errors.Join(errs...)
}
