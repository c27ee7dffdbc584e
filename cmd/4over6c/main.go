// Command 4over6c is the Linux client of the 4over6 tunnel: it connects to a
// 4over6d server over IPv6, leases an IPv4 address, and carries the host's
// IPv4 traffic through a TUN device, reconnecting by itself whenever the
// connection is lost.
//
// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the client
// lacks privileges or cannot restore the host, 2 for invalid flags. SIGHUP
// drops the current connection and connects again at once (the TUN, routes
// and DNS stay if the server hands back the same lease). -restore-dns
// undoes the DNS change of a client that was killed and exits: 0 when all
// was undone or nothing was left, 1 otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/4over6d/4over6d/tun"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "4over6c:", err)
		return 2
	}
	if o.restoreDNS {
		return restoreDNSCommand(o, stderr)
	}
	if err := tun.CheckPrivileges(); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := o.log.New(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	log.Info("4over6c starting", slog.String("server", o.server), slog.String("tun", o.tun), slog.Int("mtu", o.mtu))
	host := newHostNetwork(o, log)
	c := newClient(o, host, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	c.reconnect = hup
	c.run(ctx)
	if err := host.Close(); err != nil {
		log.Error("failed to restore the host network", slog.Any("err", err))
		return 1
	}
	log.Info("4over6c stopped", slog.Duration("uptime", time.Since(start).Round(time.Millisecond)))
	return 0
}
