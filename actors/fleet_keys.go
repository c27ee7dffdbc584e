package actors

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// The fleet's keys in etcd, under FleetConfig.Prefix (docs/fleet.md):
//
//	config             the address plan: {"pool","block_bits","source_prefix"}; no lease
//	nodes/NAME         a live node: underlay address, VXLAN MAC, numbers; node lease
//	blocks/FIRST       a block of the pool held by a node; node lease
//	claims/ADDR        a single address held by a node outside its blocks; node lease
//	addrs/ADDR         the binding of an address to a client and a node; binding lease
//	clients/SOURCE     the same binding by client source; binding lease
//	moves/SOURCE       a node asks the holder of SOURCE's address to hand it over; node lease
//	statics            the operator's static reservations, the whole table; no lease
//
// A node has two leases: the node lease (TTL -etcd-ttl) carries what must
// go when the node dies (its registration, blocks, claims); the binding
// lease (TTL -grace) carries the bindings, which outlive a dead node by
// -grace so its clients get their addresses back on another node. The
// uniqueness of an address rests on addrs/ADDR alone: it is only ever
// created if absent, or changed by a transaction that compares its revision.
const (
	keyConfig  = "config"
	keyStatics = "statics"
	dirNodes   = "nodes/"
	dirBlocks  = "blocks/"
	dirClaims  = "claims/"
	dirAddrs   = "addrs/"
	dirClients = "clients/"
	dirMoves   = "moves/"
)

// fleetPlan is the config record: what every node must agree on.
type fleetPlan struct {
	Pool      string `json:"pool"`
	BlockBits int    `json:"block_bits"`
	// SourcePrefix is -source-prefix: clients/SOURCE keys are sources of
	// this length, so nodes that disagreed would lose each other's clients.
	SourcePrefix int `json:"source_prefix"`
}

// nodeRecord is a live node as the others see it.
type nodeRecord struct {
	Name     string    `json:"name"`
	Addr     string    `json:"addr"`
	MAC      string    `json:"mac"`
	UpSince  time.Time `json:"up_since"`
	Sessions int       `json:"sessions"`
	Leased   int       `json:"leased"`
}

// ownerRecord is a block or claim: which node holds it.
type ownerRecord struct {
	Node string `json:"node"`
}

// bindingRecord is addrs/ADDR: the client the address belongs to and the
// node that serves it (or last served it, while the binding waits out
// -grace).
type bindingRecord struct {
	Node   string `json:"node"`
	Client string `json:"client"`
}

// clientRecord is clients/SOURCE.
type clientRecord struct {
	Addr string `json:"addr"`
}

// staticRecord is one entry of the statics table (messages.Static).
type staticRecord struct {
	Client string `json:"client"`
	Addr   string `json:"addr"`
	Rate   uint64 `json:"rate,omitempty"`
}

// moveRecord is moves/SOURCE: Node wants SOURCE's address; the holder
// rebinds it to Node's binding lease.
type moveRecord struct {
	Node  string `json:"node"`
	Lease int64  `json:"lease"`
}

func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fleet: encoding %T: %v", v, err)) // plain structs of strings and numbers
	}
	return string(b)
}

// fleetKeys builds the keys of one fleet (one prefix).
type fleetKeys struct{ prefix string }

func (k fleetKeys) config() string                { return k.prefix + keyConfig }
func (k fleetKeys) node(name string) string       { return k.prefix + dirNodes + name }
func (k fleetKeys) block(first netip.Addr) string { return k.prefix + dirBlocks + first.String() }
func (k fleetKeys) claim(a netip.Addr) string     { return k.prefix + dirClaims + a.String() }
func (k fleetKeys) addr(a netip.Addr) string      { return k.prefix + dirAddrs + a.String() }
func (k fleetKeys) client(src netip.Addr) string  { return k.prefix + dirClients + src.String() }
func (k fleetKeys) move(src netip.Addr) string    { return k.prefix + dirMoves + src.String() }
func (k fleetKeys) statics() string               { return k.prefix + keyStatics }

// split parses a key under the prefix into its directory and name.
func (k fleetKeys) split(key string) (dir, name string, ok bool) {
	rest, ok := strings.CutPrefix(key, k.prefix)
	if !ok {
		return "", "", false
	}
	if rest == keyConfig || rest == keyStatics {
		return rest, "", true
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return "", "", false
	}
	return rest[:i+1], rest[i+1:], true
}

func parseMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil
	}
	return mac
}
