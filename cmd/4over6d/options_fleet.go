package main

// The flags of fleet mode (issue #16): -etcd turns it on, the others say
// who this node is and what the fleet agrees on. Without -etcd the server
// is a single node, and setting any other fleet flag is an error: a node
// meant for a fleet that came up alone would lease addresses the fleet
// also leases.

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/4over6d/4over6d/actors"
)

// Bounds of -etcd-ttl. Below minEtcdTTL a renewal (a third of the TTL)
// has too little time for one etcd round trip under load; above
// maxEtcdTTL a crashed node's blocks stay taken for longer than any
// operator waits.
const (
	minEtcdTTL = 2 * time.Second
	maxEtcdTTL = time.Hour
	// maxBlockBits keeps a block at four addresses or more.
	maxBlockBits = 30
	// maxNodeName bounds -node: it is a key segment in etcd and a column
	// in `4over6d status -fleet`.
	maxNodeName = 63
)

// fleetOptions are the parsed fleet flags; etcd is empty on a single node.
type fleetOptions struct {
	etcd      []string
	node      string
	nodeAddr  netip.Addr
	blockBits int
	ttl       time.Duration
	prefix    string
}

// fleetFlags are the fleet flags as given.
type fleetFlags struct {
	etcd, node, nodeAddr string
	blockBits            int
	ttl                  time.Duration
	prefix               string
}

// fleetFlagNames are the flags that only mean something with -etcd.
var fleetFlagNames = []string{"node", "node-addr", "block-bits", "etcd-ttl", "etcd-prefix"}

func (f *fleetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.etcd, "etcd", "", "comma-separated etcd client URLs (http://HOST:PORT); makes this server one node of a fleet sharing -pool (default: a single node)")
	fs.StringVar(&f.node, "node", "", "this node's name, unique in the fleet: letters, digits, '.', '-', '_' (default: the host name; needs -etcd)")
	fs.StringVar(&f.nodeAddr, "node-addr", "", "this node's IPv6 underlay address, which other nodes send client-to-client traffic to (VXLAN) (default: the -listen address, which must then be a specific IPv6 address; needs -etcd)")
	fs.IntVar(&f.blockBits, "block-bits", actors.DefaultBlockBits, "prefix length of the blocks of -pool that nodes claim (longer than -pool's, at most 30; needs -etcd)")
	fs.DurationVar(&f.ttl, "etcd-ttl", actors.DefaultEtcdTTL, "TTL of this node's etcd lease: how long a crashed node's addresses stay taken (whole seconds, 2s-1h; needs -etcd)")
	fs.StringVar(&f.prefix, "etcd-prefix", actors.DefaultEtcdPrefix, "key prefix in etcd, so several fleets can share one etcd (starts and ends with /; needs -etcd)")
}

// parse validates the flags; set holds the names of the flags given on
// the command line, listen and pool the parsed -listen and -pool.
func (f *fleetFlags) parse(set map[string]bool, listen string, pool netip.Prefix) (fleetOptions, error) {
	if !set["etcd"] {
		return fleetOptions{}, singleNodeFlags(set)
	}
	var (
		o   = fleetOptions{blockBits: f.blockBits, ttl: f.ttl, prefix: f.prefix}
		err error
	)
	if o.etcd, err = parseEtcd(f.etcd); err != nil {
		return fleetOptions{}, err
	}
	if o.node, err = nodeName(f.node, set["node"]); err != nil {
		return fleetOptions{}, err
	}
	if o.nodeAddr, err = parseNodeAddr(f.nodeAddr, set["node-addr"], listen); err != nil {
		return fleetOptions{}, err
	}
	return o, o.validate(pool)
}

// singleNodeFlags refuses fleet flags without -etcd.
func singleNodeFlags(set map[string]bool) error {
	var given []string
	for _, name := range fleetFlagNames {
		if set[name] {
			given = append(given, "-"+name)
		}
	}
	if len(given) == 0 {
		return nil
	}
	return fmt.Errorf("%s only apply to a fleet and need -etcd: without it this server is a single node and would lease addresses a fleet also leases", strings.Join(given, ", "))
}

func (o *fleetOptions) validate(pool netip.Prefix) error {
	switch {
	case o.blockBits <= pool.Bits() || o.blockBits > maxBlockBits:
		return fmt.Errorf("-block-bits %d: want a prefix length longer than -pool %v and at most %d", o.blockBits, pool, maxBlockBits)
	case o.ttl < minEtcdTTL || o.ttl > maxEtcdTTL:
		return fmt.Errorf("-etcd-ttl %v out of range %v-%v", o.ttl, minEtcdTTL, maxEtcdTTL)
	case o.ttl%time.Second != 0:
		return fmt.Errorf("-etcd-ttl %v: want whole seconds (etcd leases count seconds)", o.ttl)
	case !strings.HasPrefix(o.prefix, "/") || !strings.HasSuffix(o.prefix, "/"):
		return fmt.Errorf("-etcd-prefix %q must start and end with /", o.prefix)
	}
	return nil
}

// parseEtcd takes the -etcd list: http or https URLs naming a host, with
// no path (the etcd client adds its own).
func parseEtcd(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, errors.New("-etcd is empty: give etcd client URLs (http://HOST:2379), or leave it out for a single node")
	}
	var out []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		u, err := url.Parse(f)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("-etcd %q is not an etcd client URL like http://[2001:db8::10]:2379", f)
		}
		out = append(out, f)
	}
	return out, nil
}

// nodeName is -node, or the host name when it was not given.
func nodeName(name string, given bool) (string, error) {
	if !given {
		host, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("-node: failed to read the host name (%w): give -node", err)
		}
		if !validNodeName(host) {
			return "", fmt.Errorf("-node: the host name %q is not a valid node name (letters, digits, '.', '-', '_', at most %d): give -node", host, maxNodeName)
		}
		return host, nil
	}
	if !validNodeName(name) {
		return "", fmt.Errorf("-node %q: want 1-%d letters, digits, '.', '-' or '_', starting with a letter or digit", name, maxNodeName)
	}
	return name, nil
}

// validNodeName keeps node names safe as an etcd key segment (no '/')
// and readable in logs and tables.
func validNodeName(s string) bool {
	if s == "" || len(s) > maxNodeName {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune(".-_", r)) {
			return false
		}
	}
	return true
}

// parseNodeAddr is -node-addr, or the -listen address when it was not
// given: other nodes must be able to send to it, so it is a specific,
// global or unique-local IPv6 address.
func parseNodeAddr(s string, given bool, listen string) (netip.Addr, error) {
	if !given {
		host, _, err := net.SplitHostPort(listen)
		a, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || checkNodeAddr(a) != nil {
			return netip.Addr{}, fmt.Errorf("-node-addr is needed: -listen %q is not a specific IPv6 address, and other nodes must know where to reach this one", listen)
		}
		return a, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("-node-addr %q is not an IPv6 address", s)
	}
	if err := checkNodeAddr(a); err != nil {
		return netip.Addr{}, fmt.Errorf("-node-addr %q: %w", s, err)
	}
	return a, nil
}

func checkNodeAddr(a netip.Addr) error {
	switch {
	case !a.Is6() || a.Is4In6():
		return errors.New("not an IPv6 address (the underlay between nodes is IPv6)")
	case a.Zone() != "" || a.IsLinkLocalUnicast():
		return errors.New("a link-local or zoned address cannot be reached from other links")
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast():
		return errors.New("other nodes cannot send to it: want this node's own unicast address")
	}
	return nil
}

// fleetConfig is what JoinFleet gets: the fleet flags plus the settings the
// whole fleet shares (pool, grace, what one source is), the overlay's MAC
// and the data plane that programs routes to the other nodes.
func fleetConfig(o *options, mac net.HardwareAddr, dp actors.DataPlane, log *slog.Logger) actors.FleetConfig {
	return actors.FleetConfig{
		Endpoints: o.fleet.etcd, Node: o.fleet.node, NodeAddr: o.fleet.nodeAddr,
		Pool: o.pool, BlockBits: o.fleet.blockBits, TTL: o.fleet.ttl, Prefix: o.fleet.prefix,
		Grace: o.grace, SourcePrefix: o.sourcePrefix, MAC: mac, DataPlane: dp, Logger: log,
	}
}

// inFleet reports whether this server is one node of a fleet (-etcd).
func (o *options) inFleet() bool { return len(o.fleet.etcd) > 0 }
