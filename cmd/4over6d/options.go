package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/cmd/internal/logflag"
	"github.com/4over6d/4over6d/tun"
)

// Defaults that the issue tracker and README promise; keep them in step.
const (
	defaultListen = "[::]:5678"
	defaultPool   = "100.64.0.0/24"
	defaultTUN    = "4over6"
	defaultMTU    = 1500
	fallbackDNS   = "8.8.8.8"
	resolvConf    = "/etc/resolv.conf"
	// resolvedUpstream is where systemd-resolved lists the upstream
	// servers it forwards to, when /etc/resolv.conf names only its stub.
	resolvedUpstream = "/run/systemd/resolve/resolv.conf"
)

// hostResolvConfs are the files the default DNS list is read from, in
// order of preference.
var hostResolvConfs = []string{resolvConf, resolvedUpstream}

// options are the parsed, validated command line.
type options struct {
	listen           string
	admin            string
	adminPort        uint16 // the port of -admin, which the TUN may not reach; 0 when off
	adminTokenFile   string
	adminToken       []byte // read from adminTokenFile at start; nil: no token needed
	pool             netip.Prefix
	tun              string
	mtu              int
	dns              [3]netip.Addr
	route            netip.Addr
	nat              string
	heartbeat        time.Duration
	timeout          time.Duration
	handshakeTimeout time.Duration
	grace            time.Duration
	maxSessions      int
	maxPerSource     int
	allow            []netip.Prefix // empty: everyone may connect
	sourcePrefix     int
	rateLimit        uint64 // bit/s per session and direction; 0: off
	clientToClient   bool
	debugFaults      bool
	pprof            bool
	offload          bool
	tunQueues        int
	queue            int
	leaseFile        string
	reservations     string   // -reservations FILE: static addresses per client; off when empty
	dnsFlag          string   // -dns as given; empty means "from resolv.conf", re-read on SIGHUP
	resolv           []string // where the default DNS list comes from
	dnsNote          string   // why the default DNS list is not simply resolv.conf's, for a warning
	log              logflag.Options
	fleet            fleetOptions // options_fleet.go; empty on a single node
}

// usageError marks errors that are the user's to fix (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// parseOptions reads flags; every invalid value is a usageError with a
// message that names the flag.
func parseOptions(args []string, stderr io.Writer, resolv ...string) (*options, error) {
	fs := flag.NewFlagSet("4over6d", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o                                          options
		pool, dns, route, level, format, rateLimit string
		allow                                      string
		fleet                                      fleetFlags
	)
	fs.StringVar(&o.listen, "listen", defaultListen, "TCP address to accept clients on")
	fs.StringVar(&o.admin, "admin", defaultAdmin, "address of the admin HTTP endpoint (/metrics, /status, /healthz, /api/v1/), or off; off loopback it needs -admin-token-file")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the admin endpoint's bearer token (one token, at least 16 bytes, not world-readable); needed when -admin is not a loopback address; with it, all but /metrics and /healthz need Authorization: Bearer <token>")
	fs.StringVar(&pool, "pool", defaultPool, "IPv4 prefix leased to clients; its first host is the server's TUN address")
	fs.StringVar(&o.tun, "tun", defaultTUN, "TUN device name")
	fs.IntVar(&o.mtu, "mtu", defaultMTU, "TUN MTU (576-1500: lab clients cap packets at 1500)")
	fs.StringVar(&dns, "dns", "", "three comma-separated IPv4 DNS servers sent in 101 (default: the first three usable IPv4 nameservers of /etc/resolv.conf, skipping loopback and link-local ones; else systemd-resolved's upstream list; else 8.8.8.8)")
	fs.StringVar(&route, "route", "0.0.0.0", "route field of 101 (0.0.0.0: all IPv4 through the tunnel)")
	fs.StringVar(&o.nat, "nat", "auto", "masquerade the pool: auto (out of any interface but the TUN, so NAT follows the default route), off, or an interface name (out of that one only)")
	fs.DurationVar(&o.heartbeat, "heartbeat", actors.DefaultHeartbeat, "interval of heartbeats (104) to each client")
	fs.DurationVar(&o.timeout, "timeout", actors.DefaultTimeout, "silence after which a client is dropped")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", actors.DefaultHandshakeTimeout, "time a new connection has to send its address request (100)")
	fs.DurationVar(&o.grace, "grace", actors.DefaultGrace, "how long a released address stays reserved for the same client source (its IPv6 address, see -source-prefix)")
	fs.IntVar(&o.maxSessions, "max-sessions", 0, "maximum concurrent sessions (0: only the pool size limits)")
	fs.IntVar(&o.maxPerSource, "max-per-source", actors.DefaultMaxPerSource, "maximum concurrent connections from one source, see -source-prefix (0: no limit)")
	fs.IntVar(&o.sourcePrefix, "source-prefix", actors.DefaultSourcePrefix, "leading bits of a client's IPv6 address that make one source for -max-per-source, bans and address stickiness (1-128; 64 when facing the internet: one host can use any address of its /64)")
	fs.StringVar(&allow, "allow", "", "comma-separated IPv6 prefixes (or addresses) whose clients may connect; others are closed before 101 (default: everyone)")
	fs.StringVar(&rateLimit, "rate-limit", "0", "per-client rate limit each way, e.g. 8mbit or 500kbit (0: off): uploads are paced, downloads beyond it dropped; a reservation's rate overrides it")
	fs.BoolVar(&o.clientToClient, "client-to-client", true, "let clients reach each other and the server's TUN address through the tunnel")
	fs.BoolVar(&o.debugFaults, "debug-faults", false, "enable POST /debug/panic on the admin endpoint (fault-injection tests; loopback admin only)")
	fs.StringVar(&o.leaseFile, "lease-file", "", "keep leases across restarts in this file (off when empty)")
	fs.StringVar(&o.reservations, "reservations", "", "static addresses (a fixed IPv4 address per client IPv6 address) in this JSON file: read at start, rewritten on every change, reloaded on SIGHUP (off when empty: reservations made at run time live in memory only)")
	fs.BoolVar(&o.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the admin endpoint")
	fs.BoolVar(&o.offload, "offload", true, "use TUN checksum and TCP segmentation offload (64 KiB reads and writes); off: one packet per system call")
	fs.IntVar(&o.tunQueues, "tun-queues", defaultTUNQueues(), fmt.Sprintf("TUN queues (1-%d), each with its own reader and writer so the TUN uses more than one core; a client always uses one; 1: a single-queue TUN (default: the CPUs this process may use, at most %d)", tun.MaxQueues, maxDefaultTUNQueues))
	fs.IntVar(&o.queue, "queue", actors.DefaultQueuePackets, "packets queued per client before drops")
	fleet.register(fs)
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&format, "log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	checks := []func() error{
		func() error { return parsePool(pool, &o.pool) },
		func() (err error) { o.fleet, err = fleet.parse(set, o.listen, o.pool); return err },
		func() (err error) {
			o.dnsFlag, o.resolv = dns, resolv
			o.dnsNote, err = parseDNS(dns, resolv, &o.dns)
			return err
		},
		func() error { return parseIPv4("-route", route, &o.route) },
		func() (err error) { o.allow, err = parseAllow(allow); return err },
		func() error { return parseRateLimit(rateLimit, &o.rateLimit) },
		func() error { return parseAdminPort(o.admin, &o.adminPort) },
		func() (err error) { o.log, err = logflag.Parse(level, format); return err },
		o.validate,
		o.readAdminToken,
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return nil, usageError{err}
		}
	}
	return &o, nil
}

func parsePool(s string, out *netip.Prefix) error {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("-pool %q is not an IPv4 prefix like 192.0.2.0/24", s)
	}
	if p.Bits() > 30 {
		return fmt.Errorf("-pool %q leaves no address for clients: use /30 or larger", s)
	}
	*out = p.Masked()
	return nil
}

// parseAdminPort takes the port of -admin (0 for off), which the server's
// nftables table closes to the TUN. Port 0 is refused: the filter and
// `4over6d status` both need to know the port before the endpoint opens.
func parseAdminPort(admin string, out *uint16) error {
	if admin == "off" {
		return nil
	}
	_, port, err := net.SplitHostPort(admin)
	if err != nil {
		return fmt.Errorf("-admin %q is not host:port or off: %w", admin, err)
	}
	n, err := net.LookupPort("tcp", port)
	if err != nil || n == 0 {
		return fmt.Errorf("-admin %q needs a fixed port (1-65535)", admin)
	}
	*out = uint16(n)
	return nil
}

// parseAllow takes the -allow list: prefixes, or bare addresses meaning
// just that address. IPv6 is what clients speak; an IPv4 prefix matches
// IPv4 clients of a dual-stack -listen (whose addresses are unmapped
// first). An empty list allows everyone.
func parseAllow(list string) ([]netip.Prefix, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("-allow %q is not a prefix like 2001:db8:1::/64", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// parseRateLimit reads -rate-limit. A bare number is bit/s, so "8" means
// 8 bit/s: almost certainly a missing unit. Below minRateLimit (1000 bytes
// a second, less than one full-size packet) no client could do anything
// useful, so such a value is refused rather than starving every session.
func parseRateLimit(s string, out *uint64) error {
	r, err := actors.ParseRate(s)
	if err != nil {
		return fmt.Errorf("-rate-limit: %w", err)
	}
	if r != 0 && r < minRateLimit {
		return fmt.Errorf("-rate-limit %q is below %s: did you forget the unit (e.g. 8mbit)?", s, actors.FormatRate(minRateLimit))
	}
	*out = r
	return nil
}

// minRateLimit is the lowest -rate-limit accepted (see parseRateLimit).
const minRateLimit = 8_000

func parseIPv4(flagName, s string, out *netip.Addr) error {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return fmt.Errorf("%s %q is not an IPv4 address", flagName, s)
	}
	*out = a
	return nil
}

// parseDNS takes the -dns list, or the host's resolvers when it is empty
// (see hostResolvers; note says what was skipped or fallen back to). Lists
// shorter than three are padded by repeating, as clients expect exactly
// three fields.
func parseDNS(list string, resolv []string, out *[3]netip.Addr) (note string, err error) {
	var addrs []netip.Addr
	if list == "" {
		addrs, note = hostResolvers(resolv)
	} else {
		for _, f := range strings.Split(list, ",") {
			var a netip.Addr
			if err := parseIPv4("-dns", strings.TrimSpace(f), &a); err != nil {
				return "", err
			}
			addrs = append(addrs, a)
		}
	}
	if len(addrs) > 3 {
		return "", fmt.Errorf("-dns has %d servers; the protocol carries three", len(addrs))
	}
	for i := range out {
		out[i] = addrs[i%len(addrs)]
	}
	return note, nil
}

// hostResolvers picks the clients' resolvers from the first file in paths
// that names a usable IPv4 nameserver. A loopback, link-local or
// unspecified one is never usable: a client would ask its own machine (on
// Ubuntu /etc/resolv.conf names systemd-resolved's 127.0.0.53, in Docker
// 127.0.0.11). With none anywhere, it is fallbackDNS. note is empty when
// the first file's list was used whole.
func hostResolvers(paths []string) (addrs []netip.Addr, note string) {
	var skipped []string
	for i, path := range paths {
		usable, bad := resolvers(path)
		for _, b := range bad {
			skipped = append(skipped, b.String()+" in "+path)
		}
		if len(usable) > 0 {
			if len(skipped) > 0 || i > 0 {
				note = fmt.Sprintf("skipped resolvers clients cannot use (%s); using %v from %s", strings.Join(skipped, ", "), usable, path)
			}
			return usable, note
		}
	}
	if len(skipped) == 0 {
		skipped = []string{"no IPv4 nameserver in " + strings.Join(paths, " or ")}
	}
	return []netip.Addr{netip.MustParseAddr(fallbackDNS)},
		fmt.Sprintf("no usable resolver on this host (%s); clients get %s: set -dns", strings.Join(skipped, ", "), fallbackDNS)
}

// resolvers returns the IPv4 nameservers of a resolv.conf in order, at
// most three usable ones, and the ones a client could not use.
func resolvers(path string) (usable, skipped []netip.Addr) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(usable) < 3 {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		switch {
		case err != nil || !a.Is4():
		case a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified():
			skipped = append(skipped, a)
		default:
			usable = append(usable, a)
		}
	}
	return usable, skipped
}

// maxDefaultTUNQueues caps the default of -tun-queues: past a handful of
// queues the Router, which every downlink batch passes, is the bound.
const maxDefaultTUNQueues = 8

// defaultTUNQueues is one TUN queue per CPU the process may run on
// (GOMAXPROCS follows the affinity mask and cgroup limit), at most
// maxDefaultTUNQueues.
func defaultTUNQueues() int {
	return min(max(runtime.GOMAXPROCS(0), 1), maxDefaultTUNQueues)
}

func (o *options) validate() error {
	switch {
	case o.mtu < 576 || o.mtu > 1500:
		return fmt.Errorf("-mtu %d out of range 576-1500", o.mtu)
	case o.tun == "" || len(o.tun) > 15:
		return fmt.Errorf("-tun %q: want 1-15 characters", o.tun)
	case o.heartbeat <= 0, o.timeout <= 0, o.handshakeTimeout <= 0:
		return errors.New("-heartbeat, -timeout and -handshake-timeout must be positive")
	case o.timeout <= o.heartbeat:
		return fmt.Errorf("-timeout %v must be longer than -heartbeat %v, or clients are dropped between heartbeats", o.timeout, o.heartbeat)
	case o.grace < 0:
		return errors.New("-grace must not be negative")
	case o.maxSessions < 0:
		return errors.New("-max-sessions must not be negative")
	case o.maxPerSource < 0:
		return errors.New("-max-per-source must not be negative")
	case o.sourcePrefix < 1 || o.sourcePrefix > 128:
		return fmt.Errorf("-source-prefix %d out of range 1-128", o.sourcePrefix)
	case o.debugFaults && !loopbackAdmin(o.admin):
		return fmt.Errorf("-debug-faults needs -admin on a loopback address, not %q: it lets anyone who reaches it crash actors", o.admin)
	case o.tunQueues < 1 || o.tunQueues > tun.MaxQueues:
		return fmt.Errorf("-tun-queues %d out of range 1-%d", o.tunQueues, tun.MaxQueues)
	case o.queue < 1:
		return errors.New("-queue must be at least 1")
	case o.nat == "":
		return errors.New("-nat must be auto, off or an interface name")
	case o.reservations != "" && o.leaseFile != "" && filepath.Clean(o.reservations) == filepath.Clean(o.leaseFile):
		return fmt.Errorf("-reservations and -lease-file must be different files, not both %q", o.reservations)
	}
	return nil
}

// readAdminToken loads -admin-token-file, and refuses an admin endpoint
// off loopback without one: anyone who reaches it could kick clients and
// read who is connected.
func (o *options) readAdminToken() error {
	if o.adminTokenFile == "" {
		if o.admin != "off" && !loopbackAdmin(o.admin) {
			return fmt.Errorf("-admin %q is not a loopback address and %w", o.admin, errNoTokenOffLoopback)
		}
		return nil
	}
	token, err := readTokenFile(o.adminTokenFile)
	if err != nil {
		return fmt.Errorf("-admin-token-file: %w", err)
	}
	o.adminToken = token
	return nil
}

// loopbackAdmin reports whether the admin address can only be reached from
// this host (its network namespace).
func loopbackAdmin(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
