package tun

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// chainDump is a chain and its rules as the kernel reports them, rendered
// in an nft-like text so tests compare meaning rather than library structs.
type chainDump struct {
	hook     string
	priority int32
	policy   string
	rules    []string
}

func TestSetupNATInstallsTable(t *testing.T) {
	forward := chainDump{
		hook: "forward", priority: 0, policy: "accept",
		rules: []string{"iifname tun4o6 accept", "oifname tun4o6 accept"},
	}
	tests := []struct {
		name   string
		cfg    NATConfig
		table  string
		chains map[string]chainDump
	}{
		{
			name:  "with masquerade",
			cfg:   NATConfig{Pool: testPool, TUN: testTUN, Egress: "eth4o6"},
			table: DefaultNATTable,
			chains: map[string]chainDump{
				"forward": forward,
				"postrouting": {
					hook: "postrouting", priority: 100, policy: "accept",
					rules: []string{"ip saddr 192.0.2.0/24 oifname eth4o6 masquerade"},
				},
			},
		},
		{
			name:   "routed pool, custom table",
			cfg:    NATConfig{Table: "four6-test", Pool: testPool, TUN: testTUN},
			table:  "four6-test",
			chains: map[string]chainDump{"forward": forward},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t, "nat-setup")
			setupNAT(t, ns, tt.cfg)
			if got := dumpTable(t, ns, tt.table); !equalDumps(got, tt.chains) {
				t.Errorf("table %s = %+v, want %+v", tt.table, got, tt.chains)
			}
		})
	}
}

func TestSetupNATReplacesStaleTable(t *testing.T) {
	ns := netnstest.New(t, "nat-stale")
	withNFT(t, ns, func(conn *nftables.Conn) error {
		table := conn.AddTable(natTable(""))
		chain := conn.AddChain(&nftables.Chain{Name: "leftover", Table: table})
		conn.AddRule(&nftables.Rule{
			Table: table,
			Chain: chain,
			Exprs: append(matchInterface(expr.MetaKeyIIFNAME, "old4o6"), &expr.Verdict{Kind: expr.VerdictDrop}),
		})
		return conn.Flush()
	})
	setupNAT(t, ns, NATConfig{Pool: testPool, TUN: testTUN})
	want := map[string]chainDump{"forward": {
		hook: "forward", priority: 0, policy: "accept",
		rules: []string{"iifname tun4o6 accept", "oifname tun4o6 accept"},
	}}
	if got := dumpTable(t, ns, DefaultNATTable); !equalDumps(got, want) {
		t.Errorf("table after replacing = %+v, want %+v", got, want)
	}
}

func TestNATCloseRemovesTable(t *testing.T) {
	ns := netnstest.New(t, "nat-close")
	nat := setupNAT(t, ns, NATConfig{Pool: testPool, TUN: testTUN, Egress: "eth4o6"})
	if err := nat.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := tableNames(t, ns); len(got) != 0 {
		t.Errorf("tables after Close = %v, want none", got)
	}
	if err := nat.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestRemoveNAT(t *testing.T) {
	tests := []struct {
		name    string
		present bool
	}{
		{"absent table", false},
		{"stale table", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t, "nat-remove")
			if tt.present {
				setupNAT(t, ns, NATConfig{Pool: testPool, TUN: testTUN})
			}
			if err := ns.Do(func() error { return RemoveNAT("") }); err != nil {
				t.Fatalf("RemoveNAT: %v", err)
			}
			if got := tableNames(t, ns); len(got) != 0 {
				t.Errorf("tables after RemoveNAT = %v, want none", got)
			}
		})
	}
}

func TestNATConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  NATConfig
		want string
	}{
		{"valid", NATConfig{Pool: testPool, TUN: testTUN, Egress: "eth0"}, ""},
		{"valid without egress", NATConfig{Pool: testPool, TUN: testTUN}, ""},
		{"no pool", NATConfig{TUN: testTUN}, "not an IPv4 prefix"},
		{"IPv6 pool", NATConfig{Pool: netip.MustParsePrefix("2001:db8::/64"), TUN: testTUN}, "not an IPv4 prefix"},
		{"no TUN", NATConfig{Pool: testPool}, "TUN name"},
		{"long egress", NATConfig{Pool: testPool, TUN: testTUN, Egress: "a-name-too-long-x"}, "egress name"},
	}
	for _, tt := range tests {
		err := tt.cfg.validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: validate = %v, want an error mentioning %q (none if empty)", tt.name, err, tt.want)
		}
	}
}

// TestNATMasqueradesPoolTraffic runs the server's IPv4 data path for real:
// a client packet written to the TUN is forwarded and masqueraded towards
// the "internet" namespace, and the reply comes back de-NATed through the
// TUN.
func TestNATMasqueradesPoolTraffic(t *testing.T) {
	server := netnstest.New(t, "nat-server")
	internet := netnstest.New(t, "nat-internet")
	egress, _ := netnstest.Link(t,
		server, []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")},
		internet, []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")})
	dev := openInNS(t, server, testTUN, false)
	if err := server.Do(EnableForwarding); err != nil {
		t.Fatalf("EnableForwarding: %v", err)
	}
	setupNAT(t, server, NATConfig{Pool: testPool, TUN: dev.Name(), Egress: egress})
	remote := listenUDP(t, internet, netip.MustParseAddrPort("198.51.100.2:0"))
	remoteAddr := remote.LocalAddr().(*net.UDPAddr).AddrPort()
	client := netip.AddrPortFrom(clientAddr, 4000)

	writeAll(t, dev, buildUDP(client, remoteAddr, []byte("out")))
	from, payload := receiveUDP(t, remote)
	if from.Addr() != netip.MustParseAddr("198.51.100.1") || payload != "out" {
		t.Fatalf("internet received %q from %v, want %q from the masqueraded 198.51.100.1", payload, from, "out")
	}
	if _, err := remote.WriteToUDPAddrPort([]byte("back"), from); err != nil {
		t.Fatalf("replying: %v", err)
	}
	p := readMatching(t, dev, func(p ipv4Packet) bool { return p.proto == protoUDP })
	srcPort, dstPort := udpPorts(p.payload)
	got := netip.AddrPortFrom(p.dst, dstPort)
	if got != client || p.src != remoteAddr.Addr() || srcPort != remoteAddr.Port() || string(p.payload[udpHeaderLen:]) != "back" {
		t.Errorf("reply %v:%d -> %v carrying %q, want %v -> %v carrying %q",
			p.src, srcPort, got, p.payload[udpHeaderLen:], remoteAddr, client, "back")
	}
}

// setupNAT installs the table inside ns and removes it when the test ends.
func setupNAT(t *testing.T, ns *netnstest.NS, cfg NATConfig) *NAT {
	t.Helper()
	return openedInNS(t, ns, "SetupNAT", func() (*NAT, error) { return SetupNAT(cfg) })
}

// withNFT runs f with an nftables connection inside ns.
func withNFT(t *testing.T, ns *netnstest.NS, f func(*nftables.Conn) error) {
	t.Helper()
	err := ns.Do(func() error {
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		return f(conn)
	})
	if err != nil {
		t.Fatalf("inspecting nftables in %s: %v", ns.Name, err)
	}
}

func tableNames(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	var names []string
	withNFT(t, ns, func(conn *nftables.Conn) error {
		tables, err := conn.ListTables()
		for _, table := range tables {
			names = append(names, table.Name)
		}
		return err
	})
	return names
}

func dumpTable(t *testing.T, ns *netnstest.NS, name string) map[string]chainDump {
	t.Helper()
	if got := tableNames(t, ns); !slices.Equal(got, []string{name}) {
		t.Fatalf("tables = %v, want only %s", got, name)
	}
	dump := map[string]chainDump{}
	withNFT(t, ns, func(conn *nftables.Conn) error {
		chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return err
		}
		for _, c := range chains {
			rules, err := conn.GetRules(c.Table, c)
			if err != nil {
				return err
			}
			dump[c.Name] = describeChain(c, rules)
		}
		return nil
	})
	return dump
}

func describeChain(c *nftables.Chain, rules []*nftables.Rule) chainDump {
	d := chainDump{hook: "none", policy: "accept"}
	if c.Hooknum != nil {
		d.hook = map[nftables.ChainHook]string{
			*nftables.ChainHookForward:     "forward",
			*nftables.ChainHookPostrouting: "postrouting",
		}[*c.Hooknum]
	}
	if c.Priority != nil {
		d.priority = int32(*c.Priority)
	}
	if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop {
		d.policy = "drop"
	}
	for _, r := range rules {
		d.rules = append(d.rules, describeRule(r.Exprs))
	}
	return d
}

// describeRule renders the expressions SetupNAT uses the way nft prints
// them; anything else shows up as its Go type so a mismatch is readable.
func describeRule(exprs []expr.Any) string {
	var words []string
	var mask net.IPMask
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			words = append(words, map[expr.MetaKey]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname"}[e.Key])
		case *expr.Payload:
			words = append(words, fmt.Sprintf("payload@%d/%d", e.Offset, e.Len))
		case *expr.Bitwise:
			mask = e.Mask
		case *expr.Cmp:
			words = append(words, describeCmp(e, mask))
		case *expr.Verdict:
			words = append(words, map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop"}[e.Kind])
		case *expr.Masq:
			words = append(words, "masquerade")
		default:
			words = append(words, fmt.Sprintf("%T", e))
		}
	}
	return strings.ReplaceAll(strings.Join(words, " "), "payload@12/4", "ip saddr")
}

func describeCmp(e *expr.Cmp, mask net.IPMask) string {
	if len(e.Data) == ipv4AddrLen && mask != nil {
		ones, _ := mask.Size()
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(e.Data)), ones).String()
	}
	return strings.TrimRight(string(e.Data), "\x00")
}

func equalDumps(a, b map[string]chainDump) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		y, ok := b[name]
		if !ok || x.hook != y.hook || x.priority != y.priority || x.policy != y.policy || !slices.Equal(x.rules, y.rules) {
			return false
		}
	}
	return true
}
