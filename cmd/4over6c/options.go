package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/4over6d/4over6d/cmd/internal/logflag"
)

// Defaults of the lab protocol (docs/protocol.md): the server's heartbeat and
// liveness intervals, and a TUN MTU that keeps packets at 1500 bytes.
const (
	defaultTUN       = "4over6c"
	defaultMTU       = 1500
	defaultHeartbeat = 20 * time.Second
	defaultTimeout   = 60 * time.Second
	minMTU           = 576
	maxMTU           = 1500
	maxIfNameLen     = 15
)

// Values of -routes that are not a prefix list.
const (
	routesDefault = "default"
	routesNone    = "none"
)

// def1 takes over all IPv4 traffic with two routes more specific than any
// default route, so an existing default route is overridden without being
// deleted (OpenVPN's def1), and comes back by itself when the TUN goes.
var def1 = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}

// routeMode says where the routes through the TUN come from.
type routeMode int

const (
	// routeFromServer follows the route field of the 101 reply.
	routeFromServer routeMode = iota
	// routeNone installs no routes beyond the TUN's own address.
	routeNone
	// routeList installs the prefixes given on the command line.
	routeList
)

// options are the parsed, validated command line.
type options struct {
	server    string
	servers   []serverEntry
	tun       string
	mtu       int
	routeMode routeMode
	routes    []netip.Prefix
	dnsApply  string
	heartbeat time.Duration
	timeout   time.Duration
	offload   bool
	log       logflag.Options

	// dnsState and restoreDNS: see dnsFlags.
	dnsState   string
	restoreDNS bool
}

// parseOptions reads the flags. Every error is a single line that names the
// offending flag, since the caller prints it as the only output before
// exiting with status 2. -help prints the flag list and returns
// flag.ErrHelp.
func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("4over6c", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var (
		o                     options
		routes, level, format string
	)
	fs.StringVar(&o.server, "server", "", "server address, [IPv6]:port or host:port (required), e.g. [2001:db8::1]:5678; a comma list, or a name with several AAAA records, is tried in turn")
	fs.StringVar(&o.tun, "tun", defaultTUN, "TUN device name")
	fs.IntVar(&o.mtu, "mtu", defaultMTU, "TUN MTU (576-1500: servers keep packets at 1500 bytes)")
	fs.StringVar(&routes, "routes", routesDefault, "routes via the TUN: default (0.0.0.0/1 and 128.0.0.0/1 when the server's route field is 0.0.0.0), none, or a comma list of IPv4 prefixes (0.0.0.0/0 is installed as those two)")
	o.dnsFlags(fs)
	fs.DurationVar(&o.heartbeat, "heartbeat", defaultHeartbeat, "interval of heartbeats (104) to the server")
	fs.DurationVar(&o.timeout, "timeout", defaultTimeout, "silence from the server (no heartbeat) after which the connection is dropped and re-established")
	fs.BoolVar(&o.offload, "offload", true, "use TUN checksum and TCP segmentation offload (64 KiB reads and writes); off: one packet per system call")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&format, "log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: 4over6c -server [2001:db8::1]:5678 [flags]")
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: all settings are flags", fs.Arg(0))
	}
	if o.restoreDNS {
		return o.restoreOnly(level, format)
	}
	checks := []func() error{
		o.checkServer,
		func() error { return o.parseRoutes(routes) },
		func() (err error) { o.log, err = logflag.Parse(level, format); return err },
		o.validate,
		o.checkDNS,
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return &o, nil
}

// checkServer parses the -server list (servers.go).
func (o *options) checkServer() (err error) {
	o.servers, err = parseServers(o.server)
	return err
}

func (o *options) parseRoutes(s string) error {
	switch s {
	case routesDefault:
		o.routeMode = routeFromServer
		return nil
	case routesNone:
		o.routeMode = routeNone
		return nil
	}
	o.routeMode = routeList
	for _, f := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("-routes %q: %q is not an IPv4 prefix like 198.51.100.0/24 (or use default or none)", s, f)
		}
		if p.Bits() == 0 {
			// As def1, so the existing default route is not replaced
			// (and then deleted on exit).
			o.routes = append(o.routes, def1...)
			continue
		}
		o.routes = append(o.routes, p.Masked())
	}
	return nil
}

func (o *options) validate() error {
	switch {
	case o.tun == "" || len(o.tun) > maxIfNameLen:
		return fmt.Errorf("-tun %q: want 1-%d characters", o.tun, maxIfNameLen)
	case o.mtu < minMTU || o.mtu > maxMTU:
		return fmt.Errorf("-mtu %d out of range %d-%d", o.mtu, minMTU, maxMTU)
	case o.heartbeat <= 0:
		return fmt.Errorf("-heartbeat %v must be positive", o.heartbeat)
	case o.timeout <= o.heartbeat:
		return fmt.Errorf("-timeout %v must be longer than -heartbeat %v", o.timeout, o.heartbeat)
	}
	return nil
}
