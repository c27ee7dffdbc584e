package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/tun"
)

// hostNet is what serve adds to the host besides the TUN: a fleet node's
// VXLAN device (nil on a single node) and the nftables table.
type hostNet struct {
	overlay *tun.VXLAN
	nat     *tun.NAT
}

// setupHost opens the overlay of a fleet node, then installs the nftables
// table, which needs the overlay's name and MTU. What it made is removed
// again when a later step fails.
func setupHost(o *options, log *slog.Logger) (*hostNet, error) {
	h := &hostNet{}
	if o.inFleet() {
		vx, err := tun.OpenVXLAN(tun.VXLANConfig{Name: actors.DefaultOverlayName, Local: o.fleet.nodeAddr, MAC: tun.MACFor(o.fleet.node)})
		if err != nil {
			return nil, fmt.Errorf("failed to open the fleet's VXLAN device %s on %v: %w", actors.DefaultOverlayName, o.fleet.nodeAddr, err)
		}
		h.overlay = vx
		log.Info("fleet overlay up", slog.String("device", vx.Name()), slog.String("local", o.fleet.nodeAddr.String()),
			slog.String("mac", vx.MAC().String()), slog.Int("mtu", vx.MTU()))
	}
	nat, err := setupNAT(o, h.overlay, log)
	if err != nil {
		h.close(log)
		return nil, err
	}
	h.nat = nat
	return h, nil
}

// close removes the overlay first and the table last, so that no client
// traffic crosses the overlay without the table's filter
// (-client-to-client=false) while the server goes down.
func (h *hostNet) close(log *slog.Logger) {
	if h.overlay != nil {
		closeLogged(log, "VXLAN device", h.overlay.Close)
	}
	if h.nat != nil {
		closeLogged(log, "NAT table", h.nat.Close)
	}
}

// joinTimeout bounds JoinFleet: a node that cannot register within two
// lease TTLs could not keep its lease alive either, and a start that
// waits for ever helps no service manager.
func joinTimeout(ttl time.Duration) time.Duration { return 2 * ttl }

// joinFleet registers this node in etcd before the engine starts, with
// the overlay and the TUN as its data plane. A failure fails the start.
func joinFleet(ctx context.Context, o *options, overlay *tun.VXLAN, dev routeTable, log *slog.Logger) (*actors.Fleet, error) {
	cfg := fleetConfig(o, overlay.MAC(), newDataPlane(overlay, dev), log)
	ctx, cancel := context.WithTimeout(ctx, joinTimeout(o.fleet.ttl))
	defer cancel()
	f, err := actors.JoinFleet(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to join the fleet at %s (-etcd) as node %q: %w", strings.Join(o.fleet.etcd, ","), o.fleet.node, err)
	}
	log.Info("fleet joined", slog.String("node", o.fleet.node), slog.String("node_addr", o.fleet.nodeAddr.String()),
		slog.String("etcd", strings.Join(o.fleet.etcd, ",")), slog.String("etcd_prefix", o.fleet.prefix),
		slog.String("pool", o.pool.String()), slog.Int("block_bits", o.fleet.blockBits), slog.Duration("ttl", o.fleet.ttl))
	return f, nil
}
