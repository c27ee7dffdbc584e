package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Fleet defaults (the -block-bits, -etcd-ttl and -etcd-prefix flags).
const (
	DefaultBlockBits   = 26
	DefaultEtcdTTL     = 10 * time.Second
	DefaultEtcdPrefix  = "/4over6d/"
	DefaultOverlayName = "4o6vx"
)

// FleetConfig is what a node needs to join a fleet: where etcd is, who it
// is, and the address plan every node must agree on.
type FleetConfig struct {
	// Endpoints are etcd client URLs (-etcd).
	Endpoints []string
	// Node is this node's name, unique in the fleet (-node).
	Node string
	// NodeAddr is this node's IPv6 underlay address (-node-addr): other
	// nodes send VXLAN to it, and the API shows it.
	NodeAddr netip.Addr
	// Pool and BlockBits are the fleet's address plan: the same on every
	// node, checked against the plan in etcd on join.
	Pool      netip.Prefix
	BlockBits int
	// TTL is the etcd lease TTL of this node's registration and claims
	// (-etcd-ttl): how long after a crash its blocks stay taken.
	TTL time.Duration
	// Prefix is the key prefix in etcd (-etcd-prefix), so several fleets
	// can share one etcd.
	Prefix string
	// Grace is how long a client's binding (client IPv6 -> IPv4) is kept
	// after its session ends, fleet-wide (-grace).
	Grace time.Duration
	// SourcePrefix groups clients for stickiness as in Config; it is part
	// of the plan every node must share.
	SourcePrefix int
	// MAC is this node's VXLAN device address, published in its node
	// record so other nodes can program their FDB and neighbours.
	MAC net.HardwareAddr
	// DataPlane programs routes to other nodes (the VXLAN device); nil in
	// unit tests that only look at the address plan.
	DataPlane DataPlane
	// DialTimeout bounds each etcd request but the lease renewals (which
	// end by the read-only deadline, TTL/2 after the last good one); 0
	// means the larger of TTL/3 and 5 s.
	DialTimeout time.Duration
	// Dialer, if set, opens the TCP connections to etcd (tests dial from
	// inside a network namespace).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	Logger *slog.Logger
}

// DataPlane is the kernel side of the fleet: it is given the full desired
// set of other nodes (and their prefixes) and this node's own /32 claims
// that lie inside other nodes' blocks, and makes the kernel match.
// tun.VXLAN plus the TUN's routes implement it; the pool calls it from a
// goroutine of its own, never from Receive.
type DataPlane interface {
	SetPeers(peers []FleetPeer) error
	// SetLocal routes these single addresses (this node's claims inside
	// blocks other nodes hold) to the TUN, ahead of the peers' blocks.
	SetLocal(addrs []netip.Addr) error
}

// FleetPeer is another node as the data plane needs it (tun.Peer, kept
// apart so the engine does not depend on the VXLAN code).
type FleetPeer struct {
	Name     string
	Underlay netip.Addr
	MAC      net.HardwareAddr
	Prefixes []netip.Prefix
}

// FleetStatus answers GET /api/v1/fleet and `4over6d status -fleet`.
type FleetStatus struct {
	Self  string      `json:"self"`
	State string      `json:"state"` // "ok" or "read-only"
	Pool  string      `json:"pool"`
	Nodes []FleetNode `json:"nodes"`
}

// FleetNode is one node as etcd and the node's own numbers describe it.
type FleetNode struct {
	Name     string         `json:"name"`
	Addr     netip.Addr     `json:"addr"`
	UpSince  time.Time      `json:"up_since"`
	Blocks   []netip.Prefix `json:"blocks"`
	Claims   []netip.Addr   `json:"claims"`
	Sessions int            `json:"sessions"`
	Leased   int            `json:"leased"`
	Self     bool           `json:"self"`
}

// ErrNoFleet is returned by fleet queries on a single node.
var ErrNoFleet = errors.New("not in a fleet (no -etcd)")

// ErrFleetUnavailable is returned by a change the fleet must agree on
// (a reservation) while this node cannot reach etcd safely: the change
// is not made, and may be tried again once etcd is back.
var ErrFleetUnavailable = errors.New("the fleet's etcd cannot be reached safely (read-only)")

// Fleet reports every node of the fleet; ErrNoFleet on a single node.
func (s *Server) Fleet() (FleetStatus, error) {
	if s.cfg.Fleet == nil {
		return FleetStatus{}, ErrNoFleet
	}
	reply, err := s.ask(s.cfg.pool, &fleetStatusQuery{})
	if err != nil {
		return FleetStatus{}, fmt.Errorf("fleet status: %w", err)
	}
	st, ok := reply.(FleetStatus)
	if !ok {
		return FleetStatus{}, fmt.Errorf("fleet status: unexpected answer %T", reply)
	}
	return st, nil
}
