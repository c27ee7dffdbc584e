package tun

import (
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

// NATConfig describes the forwarding and masquerading the server needs
// between its TUN and the interface towards the IPv4 internet.
type NATConfig struct {
	// Table is the name of the ip-family table the server owns entirely;
	// empty means DefaultNATTable.
	Table string
	// Pool is the client address pool whose traffic is masqueraded.
	Pool netip.Prefix
	// TUN is the name of the server's TUN interface.
	TUN string
	// Egress is the interface to masquerade behind; empty means no
	// masquerading (the pool is routed), only the forward chain.
	Egress string
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
//   - chain forward (filter hook, priority filter, policy accept) with
//     `iifname TUN accept` and `oifname TUN accept`;
//   - if cfg.Egress is set, chain postrouting (nat hook, priority srcnat)
//     with `ip saddr Pool oifname Egress masquerade`.
//
// A table of the same name left by a killed server is replaced in the same
// transaction, so a restart is clean and never runs with half a ruleset.
//
// The forward accept rules document intent and give the tunnel's traffic a
// place in the ruleset; they are harmless but do not open anything: nftables
// runs every base chain on a hook, so an accept here cannot override a drop
// in another table (for example a FORWARD policy of drop set by Docker or
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
	addForwardChain(conn, table, cfg.TUN)
	if cfg.Egress != "" {
		addMasqueradeChain(conn, table, cfg.Pool, cfg.Egress)
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
	case len(cfg.Egress) >= unix.IFNAMSIZ:
		return fmt.Errorf("failed to set up NAT: egress name %q is longer than %d bytes", cfg.Egress, unix.IFNAMSIZ-1)
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

func addForwardChain(conn *nftables.Conn, table *nftables.Table, tun string) {
	accept := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{
		Name:     "forward",
		Table:    table,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &accept,
	})
	for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		conn.AddRule(&nftables.Rule{
			Table: table,
			Chain: chain,
			Exprs: append(matchInterface(key, tun), &expr.Verdict{Kind: expr.VerdictAccept}),
		})
	}
}

func addMasqueradeChain(conn *nftables.Conn, table *nftables.Table, pool netip.Prefix, egress string) {
	chain := conn.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	exprs := matchSource(pool)
	exprs = append(exprs, matchInterface(expr.MetaKeyOIFNAME, egress)...)
	conn.AddRule(&nftables.Rule{
		Table: table,
		Chain: chain,
		Exprs: append(exprs, &expr.Masq{}),
	})
}

// matchInterface is `iifname NAME` or `oifname NAME`: the kernel compares
// the whole zero-padded IFNAMSIZ buffer.
func matchInterface(key expr.MetaKey, name string) []expr.Any {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
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
