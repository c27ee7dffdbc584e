package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// DefaultNATTable is the nftables table SetupNAT owns when NATConfig.Table
// is empty.
const DefaultNATTable = "4over6d"

// ipv4SourceOffset and ipv4AddrLen locate the source address in the IPv4
// header, for the `ip saddr` match.
const (
	ipv4SourceOffset = 12
	ipv4AddrLen      = 4
)

// NATConfig describes the server's own nftables table: masquerading of
// the pool towards the IPv4 internet, the MSS clamp for TCP crossing the
// TUN, and the filter that keeps the tunnel's clients off the admin port.
type NATConfig struct {
	// Table is the name of the ip-family table the server owns entirely;
	// empty means DefaultNATTable.
	Table string
	// Pool is the client address pool whose traffic is masqueraded.
	Pool netip.Prefix
	// TUN is the name of the server's TUN interface.
	TUN string
	// MTU is the TUN's MTU. TCP SYNs forwarded through the TUN (either
	// way) get their MSS option lowered to MTU-40 when it is larger, so
	// neither end sends segments the TUN would drop.
	MTU int
	// Masquerade turns on source NAT for the pool's traffic leaving the
	// host; off means the pool is routed.
	Masquerade bool
	// Egress, if set, masquerades only traffic leaving by this interface.
	// Empty masquerades traffic leaving by any interface but the TUN, so
	// NAT keeps working when the default route moves (DHCP, failover).
	Egress string
	// AdminPort, if not 0, is the TCP port of the admin endpoint: traffic
	// arriving from the TUN to it is answered with a TCP reset, whatever
	// address the endpoint listens on.
	AdminPort uint16
	// Overlay is the name of the node's VXLAN device in a fleet, empty on
	// a single node. Traffic leaving by it goes to a client of another
	// node, so it is never masqueraded, and TCP SYNs leaving by it get
	// their MSS clamped to OverlayMTU-40.
	Overlay string
	// OverlayMTU is the overlay's MTU (VXLAN.MTU); required with Overlay.
	OverlayMTU int
	// IsolateClients drops forwarding between the TUN and the overlay in
	// both directions, so that turning client-to-client traffic off also
	// holds between clients of different nodes. Only with Overlay.
	IsolateClients bool
}

// NAT is an installed nftables table; Close removes it so a stopped server
// leaves no rules behind.
type NAT struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	table *nftables.Table
}

// SetupNAT installs, in the calling thread's network namespace and in one
// atomic transaction, an ip-family table holding:
//
//   - chain forward (filter hook, priority filter, policy accept) with the
//     MSS clamp `iifname TUN tcp flags syn tcp option maxseg size > MSS
//     tcp option maxseg size set MSS` and the same for `oifname TUN`,
//     where MSS is cfg.MTU-40: a fixed value, because the route MTU
//     (`rt mtu`) of a client's SYN leaving by a 1500-byte uplink would
//     not clamp it to the TUN; with cfg.Overlay, the same for `oifname
//     OVERLAY` with cfg.OverlayMTU-40, and before the clamps, if
//     cfg.IsolateClients is set, `iifname TUN oifname OVERLAY drop` and
//     `iifname OVERLAY oifname TUN drop`;
//   - if cfg.AdminPort is set, chain input (filter hook, priority filter,
//     policy accept) with `iifname TUN tcp dport AdminPort reject with tcp
//     reset`;
//   - if cfg.Masquerade is set, chain postrouting (nat hook, priority
//     srcnat) with `ip saddr Pool oifname != TUN masquerade` (and
//     `oifname != OVERLAY` with cfg.Overlay: other nodes' clients see the
//     client's own address), or `oifname Egress` instead when cfg.Egress
//     is set.
//
// A table of the same name left by a killed server is replaced in the same
// transaction, so a restart is clean and never runs with half a ruleset.
//
// The table only adds: every chain's policy is accept, and nftables runs
// every base chain on a hook, so nothing here can override a drop in
// another table (for example a FORWARD policy of drop set by Docker or
// firewalld). Such a firewall must allow the tunnel itself.
func SetupNAT(cfg NATConfig) (*NAT, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("failed to open nftables connection: %w", err)
	}
	table := natTable(cfg.Table)
	replaceTable(conn, table)
	addForwardChain(conn, table, cfg)
	if cfg.AdminPort != 0 {
		addInputChain(conn, table, cfg.TUN, cfg.AdminPort)
	}
	if cfg.Masquerade {
		addMasqueradeChain(conn, table, cfg)
	}
	if err := conn.Flush(); err != nil {
		conn.CloseLasting()
		return nil, fmt.Errorf("failed to install nftables table %s: %w", table.Name, err)
	}
	return &NAT{conn: conn, table: table}, nil
}

func (cfg NATConfig) validate() error {
	switch {
	case !cfg.Pool.IsValid() || !cfg.Pool.Addr().Is4():
		return fmt.Errorf("failed to set up NAT: pool %v is not an IPv4 prefix", cfg.Pool)
	case cfg.TUN == "" || len(cfg.TUN) >= unix.IFNAMSIZ:
		return fmt.Errorf("failed to set up NAT: TUN name %q must have 1 to %d bytes", cfg.TUN, unix.IFNAMSIZ-1)
	case cfg.MTU < minMTU || cfg.MTU > MaxPacket:
		return fmt.Errorf("failed to set up NAT: MTU %d is outside %d..%d", cfg.MTU, minMTU, MaxPacket)
	case len(cfg.Egress) >= unix.IFNAMSIZ:
		return fmt.Errorf("failed to set up NAT: egress name %q is longer than %d bytes", cfg.Egress, unix.IFNAMSIZ-1)
	case cfg.Egress != "" && !cfg.Masquerade:
		return fmt.Errorf("failed to set up NAT: egress %q given without masquerading", cfg.Egress)
	case cfg.Egress == cfg.TUN:
		return fmt.Errorf("failed to set up NAT: egress %q is the TUN itself", cfg.Egress)
	}
	return cfg.validateOverlay()
}

func (cfg NATConfig) validateOverlay() error {
	switch {
	case cfg.Overlay == "" && cfg.OverlayMTU != 0:
		return fmt.Errorf("failed to set up NAT: overlay MTU %d given without an overlay", cfg.OverlayMTU)
	case cfg.Overlay == "" && cfg.IsolateClients:
		return errors.New("failed to set up NAT: client isolation between nodes asked for without an overlay")
	case cfg.Overlay == "":
		return nil
	case len(cfg.Overlay) >= unix.IFNAMSIZ:
		return fmt.Errorf("failed to set up NAT: overlay name %q is longer than %d bytes", cfg.Overlay, unix.IFNAMSIZ-1)
	case cfg.Overlay == cfg.TUN:
		return fmt.Errorf("failed to set up NAT: overlay %q is the TUN itself", cfg.Overlay)
	case cfg.Overlay == cfg.Egress:
		return fmt.Errorf("failed to set up NAT: egress %q is the overlay", cfg.Egress)
	case cfg.OverlayMTU < minMTU || cfg.OverlayMTU > MaxPacket:
		return fmt.Errorf("failed to set up NAT: overlay MTU %d is outside %d..%d", cfg.OverlayMTU, minMTU, MaxPacket)
	}
	return nil
}

// Close deletes the table and closes the netlink connection, which was
// opened in the namespace SetupNAT ran in, so Close may run on any thread.
// Later calls return nil.
func (n *NAT) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		return nil
	}
	conn := n.conn
	n.conn = nil
	defer conn.CloseLasting()
	return deleteTable(conn, n.table)
}

// RemoveNAT deletes the table (DefaultNATTable if empty) from the calling
// thread's network namespace if it exists, for cleaning up after a server
// that was killed before it could remove its rules.
func RemoveNAT(table string) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("failed to open nftables connection: %w", err)
	}
	return deleteTable(conn, natTable(table))
}

func natTable(name string) *nftables.Table {
	if name == "" {
		name = DefaultNATTable
	}
	return &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
}

// replaceTable queues "add, delete, add": adding an existing table is not an
// error, so the delete always has a target and the batch never fails on
// whether a stale table exists.
func replaceTable(conn *nftables.Conn, table *nftables.Table) {
	conn.AddTable(table)
	conn.DelTable(table)
	conn.AddTable(table)
}

// deleteTable removes the table whether or not it exists, with the same
// add-then-delete idiom as replaceTable.
func deleteTable(conn *nftables.Conn, table *nftables.Table) error {
	conn.AddTable(table)
	conn.DelTable(table)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("failed to delete nftables table %s: %w", table.Name, err)
	}
	return nil
}

// addMasqueradeChain masquerades the pool out of cfg.Egress, or out of
// every interface but the TUN and the overlay when it is empty.
func addMasqueradeChain(conn *nftables.Conn, table *nftables.Table, cfg NATConfig) {
	chain := conn.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	exprs := matchSource(cfg.Pool)
	switch {
	case cfg.Egress != "":
		exprs = append(exprs, matchInterface(expr.MetaKeyOIFNAME, expr.CmpOpEq, cfg.Egress)...)
	case cfg.Overlay != "":
		exprs = append(exprs, matchInterface(expr.MetaKeyOIFNAME, expr.CmpOpNeq, cfg.TUN)...)
		exprs = append(exprs, matchInterface(expr.MetaKeyOIFNAME, expr.CmpOpNeq, cfg.Overlay)...)
	default:
		exprs = append(exprs, matchInterface(expr.MetaKeyOIFNAME, expr.CmpOpNeq, cfg.TUN)...)
	}
	conn.AddRule(&nftables.Rule{
		Table: table,
		Chain: chain,
		Exprs: append(exprs, &expr.Masq{}),
	})
}

// matchInterface is `iifname NAME` or `oifname != NAME` (key and op):
// the kernel compares the whole zero-padded IFNAMSIZ buffer.
func matchInterface(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

// matchSource is `ip saddr PREFIX`: load the source address, mask it to the
// prefix length and compare it with the network address.
func matchSource(p netip.Prefix) []expr.Any {
	return []expr.Any{
		&expr.Payload{
			DestRegister: 1,
			Base:         expr.PayloadBaseNetworkHeader,
			Offset:       ipv4SourceOffset,
			Len:          ipv4AddrLen,
		},
		&expr.Bitwise{
			SourceRegister: 1,
			DestRegister:   1,
			Len:            ipv4AddrLen,
			Mask:           net.CIDRMask(p.Bits(), 8*ipv4AddrLen),
			Xor:            make([]byte, ipv4AddrLen),
		},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}
