package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// Bounds that keep a run finite and on this machine.
const (
	maxSessions    = 100_000
	maxDuration    = 30 * time.Minute
	maxSetupLimit  = 30 * time.Minute
	maxPacketRate  = 1_000_000
	minPacketSize  = 28 // IPv4 + UDP headers
	maxPacketSize  = 1500
	defaultTarget  = "198.51.100.2:9000"
	defaultPktSize = 1400
)

// documentation holds the only ranges the tool sends to unless
// -allow-any-target: the project's labs use documentation addresses, and a
// load generator pointed at anything else by mistake must refuse to start.
var documentation = []netip.Prefix{
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

func isDocumentation(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range documentation {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

type options struct {
	// client mode
	servers     []netip.AddrPort // session i dials servers[i % len(servers)]
	n           int
	rate        float64
	duration    time.Duration
	heartbeat   time.Duration
	packets     float64
	target      netip.AddrPort
	size        int
	concurrency int
	sources     []netip.Addr
	setupWait   time.Duration
	setupLimit  time.Duration
	// sink mode
	sink netip.AddrPort
	echo bool
	// both
	json     bool
	quiet    bool
	anyAddrs bool
}

const usage = `usage:
  4over6-load -server [2001:db8:1::1]:5678 -n 1000 [flags]      open N sessions, hold them, report
  4over6-load -server [2001:db8:f::11]:5678,[2001:db8:f::12]:5678 -n 1000 [flags]
                                                               the same, spread round-robin over several servers
  4over6-load -sink 198.51.100.2:9000 -duration 20s [-echo]     count (and echo) the UDP packets sessions send

Every run is bounded: setup stops after -setup-limit, sessions are held for
-duration, then everything is closed and a report is printed (-json for a
machine-readable one). Only documentation addresses (2001:db8::/32,
192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and loopback are accepted as
-server, -target and -sink.
`

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("4over6-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var (
		o                          options
		server, target, sink, srcs string
		hardDuration               time.Duration
	)
	fs.StringVar(&server, "server", "", "4over6d address, [IPv6]:port, or a comma list of them: session i dials the (i mod count)th, like source i (a fleet's nodes)")
	fs.IntVar(&o.n, "n", 100, "sessions to open")
	fs.Float64Var(&o.rate, "rate", 0, "connects per second (0: as fast as -concurrency allows)")
	fs.DurationVar(&hardDuration, "duration", 10*time.Second, "how long to hold the sessions once set up (sink: how long to listen)")
	fs.DurationVar(&o.heartbeat, "heartbeat", 20*time.Second, "interval of the heartbeats (104) each session sends")
	fs.Float64Var(&o.packets, "packets", 0, "UDP packets per second each session sends through the tunnel as 102 frames (0: none)")
	fs.StringVar(&target, "target", defaultTarget, "IPv4 host:port the -packets are addressed to")
	fs.IntVar(&o.size, "size", defaultPktSize, "size of each IPv4 packet of -packets, headers included")
	fs.IntVar(&o.concurrency, "concurrency", 256, "session setups in flight at once")
	fs.StringVar(&srcs, "sources", "", "local IPv6 source addresses, round-robin: ADDR, FIRST-LAST or a comma list of those (default: the kernel's choice)")
	fs.DurationVar(&o.setupWait, "setup-timeout", 10*time.Second, "time one session has from dial to its 101 reply")
	fs.DurationVar(&o.setupLimit, "setup-limit", 2*time.Minute, "time after which no new session is started")
	fs.StringVar(&sink, "sink", "", "sink mode: listen for UDP on this IPv4 host:port and count packets")
	fs.BoolVar(&o.echo, "echo", false, "sink mode: send every packet back to its sender")
	fs.BoolVar(&o.json, "json", false, "print the report as one JSON object")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	fs.BoolVar(&o.anyAddrs, "allow-any-target", false, "accept addresses outside the documentation ranges (never on a shared network)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.duration = hardDuration
	if o.duration <= 0 || o.duration > maxDuration {
		return nil, fmt.Errorf("-duration must be in (0, %v]", maxDuration)
	}
	check := func(flagName string, a netip.Addr) error {
		if !o.anyAddrs && !isDocumentation(a) {
			return fmt.Errorf("-%s %v is not a documentation or loopback address (see -allow-any-target)", flagName, a)
		}
		return nil
	}
	if sink != "" {
		ap, err := netip.ParseAddrPort(sink)
		if err != nil || !ap.Addr().Unmap().Is4() {
			return nil, fmt.Errorf("-sink: want IPv4 host:port, got %q", sink)
		}
		o.sink = ap
		return &o, check("sink", ap.Addr())
	}
	if server == "" {
		return nil, errors.New("-server is required (or -sink for sink mode)")
	}
	for _, part := range strings.Split(server, ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("-server: %w", err)
		}
		if err := check("server", ap.Addr()); err != nil {
			return nil, err
		}
		o.servers = append(o.servers, ap)
	}
	switch {
	case o.n < 1 || o.n > maxSessions:
		return nil, fmt.Errorf("-n must be in 1..%d", maxSessions)
	case o.rate < 0:
		return nil, errors.New("-rate must not be negative")
	case o.heartbeat <= 0:
		return nil, errors.New("-heartbeat must be positive")
	case o.packets < 0 || o.packets > maxPacketRate:
		return nil, fmt.Errorf("-packets must be in 0..%d", maxPacketRate)
	case o.size < minPacketSize || o.size > maxPacketSize:
		return nil, fmt.Errorf("-size must be in %d..%d", minPacketSize, maxPacketSize)
	case o.concurrency < 1:
		return nil, errors.New("-concurrency must be at least 1")
	case o.setupWait <= 0:
		return nil, errors.New("-setup-timeout must be positive")
	case o.setupLimit <= 0 || o.setupLimit > maxSetupLimit:
		return nil, fmt.Errorf("-setup-limit must be in (0, %v]", maxSetupLimit)
	}
	tp, err := netip.ParseAddrPort(target)
	if err != nil || !tp.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("-target: want IPv4 host:port, got %q", target)
	}
	o.target = netip.AddrPortFrom(tp.Addr().Unmap(), tp.Port())
	if o.packets > 0 {
		if err := check("target", o.target.Addr()); err != nil {
			return nil, err
		}
	}
	if o.sources, err = parseSources(srcs); err != nil {
		return nil, fmt.Errorf("-sources: %w", err)
	}
	return &o, nil
}

// maxSources bounds a FIRST-LAST range, so a typo cannot ask for 2^64
// addresses.
const maxSources = 1 << 16

// parseSources reads "ADDR", "FIRST-LAST" or a comma list of those.
func parseSources(s string) ([]netip.Addr, error) {
	if s == "" {
		return nil, nil
	}
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		first, last, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := netip.ParseAddr(first)
		if err != nil {
			return nil, err
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(last)
		if err != nil {
			return nil, err
		}
		if a.BitLen() != b.BitLen() || b.Less(a) {
			return nil, fmt.Errorf("range %s is empty or mixes families", part)
		}
		for x := a; ; x = x.Next() {
			if len(out) >= maxSources {
				return nil, fmt.Errorf("more than %d addresses", maxSources)
			}
			out = append(out, x)
			if x == b {
				break
			}
		}
	}
	return out, nil
}
