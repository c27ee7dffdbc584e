// Package actors is the 4over6d engine: a Supervisor that accepts client
// connections and spawns one Session actor per connection, an AddressPool
// that owns the leases, a Router that owns the IPv4-to-session map, and a
// TUN actor that owns the device. They share no mutable state: every
// change of ownership is a message (see docs/design.md).
package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/4over6d/4over6d/tun"
)

// Defaults from the lab protocol (docs/protocol.md): clients expect a heartbeat
// every 20 s and consider 60 s of silence a dead link.
const (
	DefaultHeartbeat        = 20 * time.Second
	DefaultTimeout          = 60 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultGrace            = 5 * time.Minute
	DefaultQueuePackets     = 1024
	DefaultMaxPerSource     = 16
)

// Config is everything the engine needs from its owner. Listener and
// Device are created by the caller (the real binary or a test) so the
// engine can run on a real TUN or on the in-memory fake.
type Config struct {
	Listener net.Listener
	Device   tun.Device
	// Queues, when set, are all the queues of a multi-queue TUN, each a
	// Device of its own with its own TUN actor, so that reading and
	// writing the TUN can use more than one core. Empty means Device is
	// the only queue; when set, Device is Queues[0] (filled in if nil).
	Queues []tun.Device
	// Pool is the IPv4 prefix leased to clients; its first host is the
	// server's own address and is never leased.
	Pool  netip.Prefix
	Route netip.Addr
	DNS   [3]netip.Addr
	// Heartbeat is how often a 104 goes to each assigned client.
	Heartbeat time.Duration
	// Timeout is how long a client may stay silent before it is dropped;
	// a write that makes no progress for as long also drops it.
	Timeout time.Duration
	// HandshakeTimeout bounds the time from accept to the first 100.
	HandshakeTimeout time.Duration
	// Grace is how long a released address stays reserved for the same
	// client source (its IPv6 address, or its prefix: SourcePrefix).
	Grace time.Duration
	// MaxSessions caps concurrent sessions; 0 means the pool size limits.
	MaxSessions int
	// MaxPerSource caps concurrent connections from one source (see
	// SourcePrefix), so one host cannot take the whole pool or flood the
	// accept path; 0 means no limit.
	MaxPerSource int
	// Allow lists the prefixes whose clients may connect; a connection
	// from elsewhere is closed before it becomes a session. Empty allows
	// everyone. IPv4 clients of a dual-stack listener match IPv4 prefixes
	// (IPv4-mapped ones are normalized to those).
	Allow []netip.Prefix
	// SourcePrefix is how many leading bits of a client's IPv6 address
	// make one source, for MaxPerSource, bans and grace stickiness: 128
	// (also for 0) is one address, 64 a whole /64, which is what one host
	// on the internet can use (see docs/security.md).
	SourcePrefix int
	// IsolateClients drops client packets addressed to the pool (other
	// clients and the server's TUN address). The zero value allows them,
	// as the lab expects.
	IsolateClients bool
	// LeaseFile, if set, keeps leases across restarts (see leasefile.go).
	LeaseFile string
	// ReservationsFile, if set, holds the static reservations (see
	// reservations.go): read at Start (a bad file fails Start), rewritten
	// after every Reserve and Unreserve, read again by
	// ReloadReservations. Without it, reservations made with Reserve
	// live in memory only and end with the process.
	ReservationsFile string
	// RateLimit caps each session's throughput each way, in bit/s of IPv4
	// packets (0: no limit): the uplink is paced, the downlink policed
	// (bucket.go). A client's reservation with a rate overrides it.
	RateLimit uint64
	// Fleet, when set, makes this node one of a fleet (fleet*.go): the
	// pool then leases only from blocks it holds in etcd, and bindings
	// and stickiness are fleet-wide. Nil is a single node, as before.
	Fleet *Fleet
	// QueuePackets bounds each session's queue towards its client.
	QueuePackets int
	Logger       *slog.Logger
	Metrics      *Metrics
	// now is the Supervisor's clock for bans; tests set a fake one.
	now func() time.Time
}

// withDefaults fills zero fields, so tests and the binary share defaults.
func (c Config) withDefaults() Config {
	if c.Device == nil && len(c.Queues) > 0 {
		c.Device = c.Queues[0]
	}
	if len(c.Queues) == 0 && c.Device != nil {
		c.Queues = []tun.Device{c.Device}
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.QueuePackets == 0 {
		c.QueuePackets = DefaultQueuePackets
	}
	if !c.Route.IsValid() {
		c.Route = netip.IPv4Unspecified()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = &Metrics{}
	}
	c.Allow = normalizeAllow(c.Allow)
	if c.SourcePrefix == 0 {
		c.SourcePrefix = DefaultSourcePrefix
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Listener == nil:
		return errors.New("config: no listener")
	case c.Device == nil:
		return errors.New("config: no TUN device")
	case slices.Contains(c.Queues, nil):
		return errors.New("config: a TUN queue is nil")
	case c.Queues[0] != c.Device:
		return errors.New("config: Device is not the first of Queues")
	case !c.Pool.IsValid() || !c.Pool.Addr().Is4():
		return fmt.Errorf("config: pool %v is not an IPv4 prefix", c.Pool)
	case c.Pool.Bits() > 30:
		return fmt.Errorf("config: pool %v has no room for clients (need /30 or larger)", c.Pool)
	case c.SourcePrefix < 1 || c.SourcePrefix > 128:
		return fmt.Errorf("config: source prefix /%d out of range 1-128", c.SourcePrefix)
	}
	for _, p := range c.Allow {
		if !p.IsValid() {
			return fmt.Errorf("config: allow prefix %v is not valid", p)
		}
	}
	for i, d := range c.DNS {
		if !d.Is4() {
			return fmt.Errorf("config: DNS server %d (%v) is not an IPv4 address", i+1, d)
		}
	}
	return nil
}
