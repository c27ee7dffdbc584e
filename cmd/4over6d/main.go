// Command 4over6d is the 4over6 tunnel server: clients on an IPv6-only
// network connect over TCP, lease an IPv4 address and exchange IPv4 packets
// that the server writes to a TUN device, where the kernel forwards (and
// NATs) them to the IPv4 side.
//
// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the server
// cannot start or fails, 2 for invalid flags, 3 when the server gave up
// because a service actor (pool, Router, TUN actor) kept failing or the
// Supervisor itself failed; it saved its leases and removed its TUN device
// and NAT table first, and a service manager should start it again.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/tun"
)

// natTable is the nftables table 4over6d owns.
const natTable = "4over6d"

// exitGaveUp is the exit code after the server gave up on a failing actor
// (see the package comment); the systemd unit and compose restart on it.
const exitGaveUp = 3

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// consoleCommands are the subcommands beside the server itself: they
// talk to a running server or clean up after one.
var consoleCommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"status": runStatus, "cleanup": runCleanup, "kick": runKick, "reserve": runReserve, "unreserve": runUnreserve,
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && consoleCommands[args[0]] != nil {
		return consoleCommands[args[0]](args[1:], stdout, stderr)
	}
	o, err := parseOptions(args, stderr, hostResolvConfs...)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "4over6d:", err)
		return 2
	}
	log := o.log.New(stderr)
	if o.dnsNote != "" {
		log.Warn("DNS for clients: "+o.dnsNote, slog.String("dns", fmt.Sprint(o.dns)))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if err := serve(ctx, o, log); err != nil {
		fmt.Fprintln(stderr, "4over6d:", err)
		if gaveUp := (*actors.GaveUpError)(nil); errors.As(err, &gaveUp) {
			return exitGaveUp
		}
		return 1
	}
	log.Info("4over6d stopped", slog.Duration("uptime", time.Since(start).Round(time.Millisecond)))
	return 0
}

// serve brings the server up, waits for ctx to end, and takes it down in
// reverse order. Every step that changed the host is undone on the way out,
// also when a later step fails.
func serve(ctx context.Context, o *options, log *slog.Logger) error {
	if err := tun.CheckPrivileges(); err != nil {
		return err
	}
	if err := tun.EnableForwarding(); err != nil {
		return err
	}
	queues, err := tun.OpenQueues(tun.Config{Name: o.tun, MTU: o.mtu, Prefix: o.pool, Offload: o.offload, Queues: o.tunQueues})
	if err != nil {
		return err
	}
	defer closeLogged(log, "TUN device", func() error { return tun.CloseQueues(queues) })
	dev := queues[0]
	offloadOn, why := dev.Offload()
	if o.offload && !offloadOn {
		log.Warn("TUN offloads unavailable; every packet costs its own system call", slog.Any("err", why))
	}
	if udpOn, why := dev.UDPOffload(); offloadOn && !udpOn {
		log.Warn("TUN UDP segmentation offload unavailable; every UDP datagram costs its own system call", slog.Any("err", why))
	}
	host, err := setupHost(o, log)
	if err != nil {
		return err
	}
	defer host.close(log)
	// The protocol has its own heartbeats; TCP keep-alives would only add
	// system calls to every connection.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", o.listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", o.listen, err)
	}
	cfg := engineConfig(o, ln, queues, log)
	if o.inFleet() {
		if cfg.Fleet, err = joinFleet(ctx, o, host.overlay, dev, log); err != nil {
			_ = ln.Close()
			return err
		}
		// After the engine has stopped (serve closes it before it
		// returns) and before the overlay goes.
		defer closeLogged(log, "this node from the fleet", cfg.Fleet.Close)
	}
	srv, err := actors.Start(cfg)
	if err != nil {
		_ = ln.Close()
		return err
	}
	// The admin endpoint ends with serve, however serve ends: on a
	// signal, and also when the server gives up (the signal context is
	// still live then, and waiting for it would keep the process, its
	// TUN device and its NAT table alive).
	adminCtx, stopAdmin := context.WithCancel(ctx)
	defer stopAdmin()
	waitAdmin := func() {}
	if o.admin != "off" {
		a := &admin{srv: srv, root: dashboardHandler(), token: o.adminToken, listen: ln.Addr().String(), tun: dev.Name(), tunQueues: len(queues), pool: o.pool, faults: o.debugFaults, pprof: o.pprof,
			offload: newOffloadCollector(offloadOn, func() tun.OffloadStats { return sumOffloadStats(queues) })}
		if waitAdmin, err = serveAdmin(adminCtx, o.admin, a, log); err != nil {
			_ = srv.Close()
			return err
		}
	}
	defer func() { stopAdmin(); waitAdmin() }()
	log.Info("4over6d serving", slog.String("listen", ln.Addr().String()), slog.String("tun", dev.Name()),
		slog.String("pool", o.pool.String()), slog.String("server_addr", tun.ServerAddr(o.pool).String()), slog.Int("mtu", o.mtu), slog.Int("tun_queues", len(queues)), slog.Bool("offload", offloadOn), slog.String("dns", fmt.Sprint(o.dns)))
	if failure := waitReloading(ctx, o, srv, log); failure != nil {
		log.Error("the server gave up; removing NAT table and TUN device and exiting", slog.Any("err", failure), slog.Int("exit_code", exitGaveUp))
		if err := closeWithin(srv, shutdownDeadline); err != nil {
			log.Error("failed to stop cleanly", slog.Any("err", err))
		}
		return failure
	}
	log.Info("shutting down: closing sessions, removing NAT table and TUN device")
	return closeWithin(srv, shutdownDeadline)
}

// shutdownDeadline bounds a graceful stop; the TUN and NAT table are
// removed after it either way.
const shutdownDeadline = 5 * time.Second

// closeWithin stops the engine, giving up after d so that a wedged actor
// cannot keep the process (and its host changes) alive.
func closeWithin(srv *actors.Server, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("failed to stop the sessions within %v; exiting anyway", d)
	}
}

// waitReloading blocks until ctx ends or the server gives up (its reason
// is returned), applying SIGHUP meanwhile: the DNS list is read again (from
// /etc/resolv.conf unless -dns was given) and new 101 replies use it, and
// the -reservations file is read again; no session is dropped.
func waitReloading(ctx context.Context, o *options, srv *actors.Server, log *slog.Logger) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-srv.Failed():
			return err
		case <-hup:
			if err := srv.ReloadReservations(); err != nil {
				log.Error("SIGHUP: "+err.Error(), slog.String("file", o.reservations))
			}
			var dns [3]netip.Addr
			note, err := parseDNS(o.dnsFlag, o.resolv, &dns)
			if err != nil {
				log.Error("SIGHUP: keeping the old DNS list", slog.Any("err", err))
				continue
			}
			if note != "" {
				log.Warn("SIGHUP: DNS for clients: "+note, slog.String("dns", fmt.Sprint(dns)))
			}
			log.Info("SIGHUP: reloading", slog.String("dns", fmt.Sprint(dns)))
			srv.Reload(o.route, dns)
		}
	}
}

// engineConfig is the engine's configuration from the flags; the TUN's
// queues are its devices (the first of them is Device).
func engineConfig(o *options, ln net.Listener, queues []*tun.Linux, log *slog.Logger) actors.Config {
	devs := make([]tun.Device, len(queues))
	for i, q := range queues {
		devs[i] = q
	}
	return actors.Config{
		Listener: ln, Queues: devs, Pool: o.pool, Route: o.route, DNS: o.dns,
		Heartbeat: o.heartbeat, Timeout: o.timeout, HandshakeTimeout: o.handshakeTimeout,
		Grace: o.grace, MaxSessions: o.maxSessions, MaxPerSource: o.maxPerSource, IsolateClients: !o.clientToClient,
		Allow: o.allow, SourcePrefix: o.sourcePrefix,
		QueuePackets: o.queue, LeaseFile: o.leaseFile, ReservationsFile: o.reservations, RateLimit: o.rateLimit, Logger: log,
	}
}

// setupNAT installs the server's nftables table: the MSS clamp for the
// TUN's MTU, the filter that closes the admin port to the TUN and, unless
// -nat off, the masquerade of the pool (-nat auto: out of any interface but
// the TUN, so it follows the default route when that moves). On a fleet
// node (overlay not nil) the table also covers the VXLAN device: its MTU,
// and with -client-to-client=false the isolation of clients across nodes,
// whose traffic goes through the kernel, never through the engine.
func setupNAT(o *options, overlay *tun.VXLAN, log *slog.Logger) (*tun.NAT, error) {
	cfg := tun.NATConfig{Table: natTable, Pool: o.pool, TUN: o.tun, MTU: o.mtu, AdminPort: o.adminPort,
		Masquerade: o.nat != "off"}
	if overlay != nil {
		cfg.Overlay, cfg.OverlayMTU, cfg.IsolateClients = overlay.Name(), overlay.MTU(), !o.clientToClient
	}
	masquerade, err := natEgress(o, &cfg, log)
	if err != nil {
		return nil, err
	}
	nat, err := tun.SetupNAT(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Masquerade {
		log.Info("NAT enabled: masquerading the pool "+masquerade, slog.String("pool", o.pool.String()))
	}
	attrs := []any{slog.String("table", natTable), slog.Int("tcp_mss_clamp", o.mtu-40)}
	if o.adminPort != 0 {
		attrs = append(attrs, slog.Int("admin_port_closed_to_tun", int(o.adminPort)))
	}
	if overlay != nil {
		attrs = append(attrs, slog.String("overlay", cfg.Overlay), slog.Bool("clients_isolated_across_nodes", cfg.IsolateClients))
	}
	log.Info("nftables table installed", attrs...)
	return nat, nil
}

// natEgress applies -nat IFACE to cfg and says, for the log, what the
// masquerade covers. For -nat auto it warns when there is no IPv4 default
// route: clients then reach only the networks this host routes.
func natEgress(o *options, cfg *tun.NATConfig, log *slog.Logger) (string, error) {
	switch o.nat {
	case "off":
		return "", nil
	case "auto":
		ifc, err := tun.DefaultRouteInterface()
		if err != nil {
			return "", err
		}
		if ifc == "" {
			log.Warn("no IPv4 default route: clients reach only networks this host has routes to; NAT applies to any uplink once a default route appears")
			return "out of any interface but " + o.tun, nil
		}
		return fmt.Sprintf("out of any interface but %s (the default route is now via %s)", o.tun, ifc), nil
	}
	cfg.Egress = o.nat
	return "out of " + o.nat + " only", nil
}

func closeLogged(log *slog.Logger, what string, f func() error) {
	if err := f(); err != nil {
		log.Error("failed to remove "+what, slog.Any("err", err))
	}
}
