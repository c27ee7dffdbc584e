package tun

import (
	"encoding/binary"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Offsets and values in the TCP header and options that the MSS clamp and
// the admin filter match on.
const (
	tcpDstPortOffset = 2
	tcpFlagsOffset   = 13
	tcpFlagSYN       = 0x02
	// tcpOptMSS is the MSS option's kind; its two-byte value follows the
	// kind and length bytes.
	tcpOptMSS       = 2
	tcpOptMSSOffset = 2
	tcpOptMSSLen    = 2
	// ipv4TCPHeaders is what an IPv4 packet carries besides the segment
	// when neither header has options: MSS = MTU - 40.
	ipv4TCPHeaders = 40
)

// clampedMSS is the largest MSS whose segments fit a link of this MTU.
func clampedMSS(mtu int) uint16 { return uint16(mtu - ipv4TCPHeaders) }

// addForwardChain holds the MSS clamp for SYNs (and SYN-ACKs) entering and
// leaving by the TUN: without it, a client whose TUN MTU is larger than
// the server's, or an internet host behind a 1500-byte link, announces an
// MSS whose full-sized segments the server's TUN drops. In a fleet it
// also clamps SYNs leaving by the overlay, whose MTU is the underlay's
// minus the VXLAN headers (those entering by it leave by the TUN and are
// clamped there), and, when clients are isolated, drops what crosses
// between the TUN and the overlay before anything else.
func addForwardChain(conn *nftables.Conn, table *nftables.Table, cfg NATConfig) {
	chain := addFilterChain(conn, table, "forward", nftables.ChainHookForward)
	add := func(exprs ...[]expr.Any) {
		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: slices.Concat(exprs...)})
	}
	if cfg.Overlay != "" && cfg.IsolateClients {
		add(dropBetween(cfg.TUN, cfg.Overlay))
		add(dropBetween(cfg.Overlay, cfg.TUN))
	}
	mss := clampedMSS(cfg.MTU)
	add(matchInterface(expr.MetaKeyIIFNAME, expr.CmpOpEq, cfg.TUN), clampMSS(mss))
	add(matchInterface(expr.MetaKeyOIFNAME, expr.CmpOpEq, cfg.TUN), clampMSS(mss))
	if cfg.Overlay != "" {
		add(matchInterface(expr.MetaKeyOIFNAME, expr.CmpOpEq, cfg.Overlay), clampMSS(clampedMSS(cfg.OverlayMTU)))
	}
}

// dropBetween is `iifname IN oifname OUT drop`.
func dropBetween(in, out string) []expr.Any {
	return slices.Concat(
		matchInterface(expr.MetaKeyIIFNAME, expr.CmpOpEq, in),
		matchInterface(expr.MetaKeyOIFNAME, expr.CmpOpEq, out),
		[]expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}},
	)
}

// addFilterChain adds a base chain of filter type and priority with policy
// accept: the table only ever adds rules to what the host decides.
func addFilterChain(conn *nftables.Conn, table *nftables.Table, name string, hook *nftables.ChainHook) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return conn.AddChain(&nftables.Chain{
		Name:     name,
		Table:    table,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  hook,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &accept,
	})
}

// clampMSS is `tcp flags syn tcp option maxseg size > MSS tcp option
// maxseg size set MSS`. A segment without the option stops the rule at
// the load (the kernel never adds one); the write fixes the checksum.
func clampMSS(mss uint16) []expr.Any {
	value := binary.BigEndian.AppendUint16(nil, mss)
	mssOption := expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: tcpOptMSS, Offset: tcpOptMSSOffset, Len: tcpOptMSSLen}
	load, store := mssOption, mssOption
	load.DestRegister, store.SourceRegister = 1, 1
	return append(matchTCP(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpFlagSYN}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
		&load,
		&expr.Cmp{Op: expr.CmpOpGt, Register: 1, Data: value},
		&expr.Immediate{Register: 1, Data: value},
		&store,
	)
}

// addInputChain keeps the tunnel's clients off the admin endpoint, which
// has no authentication and lists every client: `iifname TUN tcp dport
// PORT reject with tcp reset`. It matches whatever address the packet is
// for (the TUN address, an uplink address, a wildcard listener), which no
// -admin value can get wrong. A reset rather than a drop makes the port
// look like any other closed port of the server (the kernel resets those
// too), and a client fails at once instead of retrying its SYN for
// minutes. The TUN carries IPv4 only, so an ip-family chain covers it.
func addInputChain(conn *nftables.Conn, table *nftables.Table, tun string, port uint16) {
	chain := addFilterChain(conn, table, "input", nftables.ChainHookInput)
	exprs := append(matchInterface(expr.MetaKeyIIFNAME, expr.CmpOpEq, tun), matchTCP()...)
	exprs = append(exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpDstPortOffset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	)
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs})
}

// matchTCP is `meta l4proto tcp`, the dependency nft adds before any tcp
// field.
func matchTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}
