package main

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/actors"
)

// TestFleetFlags checks the fleet flags: what they parse to, their
// defaults (the host name, the -listen address), the values refused, and
// that without -etcd every other fleet flag is an error.
func TestFleetFlags(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || !validNodeName(host) {
		t.Fatalf("this host's name %q (%v) cannot be a default node name", host, err)
	}
	const etcd = "http://[2001:db8::10]:2379"
	listen := []string{"-listen", "[2001:db8:1::1]:5678"}
	fleet := func(args ...string) []string {
		return append([]string{"-pool", "192.0.2.0/24", "-etcd", etcd}, args...)
	}
	tests := []struct {
		name    string
		args    []string
		want    fleetOptions // etcd nil: a single node
		wantErr string       // a part of the error; "" for success
	}{
		{"single node by default", nil, fleetOptions{}, ""},
		{"defaults", fleet(listen...), fleetOptions{etcd: []string{etcd}, node: host, nodeAddr: netip.MustParseAddr("2001:db8:1::1"),
			blockBits: 26, ttl: 10 * time.Second, prefix: "/4over6d/"}, ""},
		{"all given", []string{"-pool", "192.0.2.0/24", "-etcd", " http://[2001:db8::10]:2379, https://etcd.example:2379/ ,http://203.0.113.5:2379",
			"-node", "node-1.lab_a", "-node-addr", "2001:db8:2::1", "-block-bits", "28", "-etcd-ttl", "5s", "-etcd-prefix", "/lab/"},
			fleetOptions{etcd: []string{etcd, "https://etcd.example:2379/", "http://203.0.113.5:2379"}, node: "node-1.lab_a",
				nodeAddr: netip.MustParseAddr("2001:db8:2::1"), blockBits: 28, ttl: 5 * time.Second, prefix: "/lab/"}, ""},
		{"-node-addr beside a wildcard -listen", fleet("-node-addr", "fd00:db8::1"), fleetOptions{etcd: []string{etcd}, node: host,
			nodeAddr: netip.MustParseAddr("fd00:db8::1"), blockBits: 26, ttl: 10 * time.Second, prefix: "/4over6d/"}, ""},
		{"widest blocks, shortest TTL, root prefix", fleet(append(listen, "-block-bits", "25", "-etcd-ttl", "2s", "-etcd-prefix", "/")...),
			fleetOptions{etcd: []string{etcd}, node: host, nodeAddr: netip.MustParseAddr("2001:db8:1::1"), blockBits: 25, ttl: 2 * time.Second, prefix: "/"}, ""},
		{"narrowest blocks, longest TTL", fleet(append(listen, "-block-bits", "30", "-etcd-ttl", "1h")...),
			fleetOptions{etcd: []string{etcd}, node: host, nodeAddr: netip.MustParseAddr("2001:db8:1::1"), blockBits: 30, ttl: time.Hour, prefix: "/4over6d/"}, ""},

		{"-node without -etcd", []string{"-node", "n1"}, fleetOptions{}, "-node only apply to a fleet and need -etcd"},
		{"several without -etcd", []string{"-block-bits", "26", "-etcd-ttl", "10s", "-etcd-prefix", "/x/", "-node-addr", "2001:db8::1"},
			fleetOptions{}, "-node-addr, -block-bits, -etcd-ttl, -etcd-prefix only apply"},
		{"empty -etcd", []string{"-etcd", ""}, fleetOptions{}, "-etcd is empty"},
		{"no scheme", fleet("-etcd", "[2001:db8::10]:2379"), fleetOptions{}, "-etcd"},
		{"other scheme", fleet("-etcd", "unix:///run/etcd.sock"), fleetOptions{}, "-etcd"},
		{"a path", fleet("-etcd", "http://[2001:db8::10]:2379/v3"), fleetOptions{}, "-etcd"},
		{"user info", fleet("-etcd", "http://root:pw@[2001:db8::10]:2379"), fleetOptions{}, "-etcd"},
		{"empty item", fleet("-etcd", etcd+","), fleetOptions{}, "-etcd"},
		{"wildcard -listen", fleet(), fleetOptions{}, "-node-addr is needed: -listen \"[::]:5678\""},
		{"host name -listen", fleet("-listen", "localhost:5678"), fleetOptions{}, "-node-addr is needed"},
		{"loopback -listen", fleet("-listen", "[::1]:5678"), fleetOptions{}, "-node-addr is needed"},
		{"IPv4 -listen", fleet("-listen", "198.51.100.1:5678"), fleetOptions{}, "-node-addr is needed"},
		{"IPv4 -node-addr", fleet("-node-addr", "198.51.100.1"), fleetOptions{}, "not an IPv6 address"},
		{"IPv4-mapped -node-addr", fleet("-node-addr", "::ffff:198.51.100.1"), fleetOptions{}, "not an IPv6 address"},
		{"link-local -node-addr", fleet("-node-addr", "fe80::1"), fleetOptions{}, "link-local"},
		{"zoned -node-addr", fleet("-node-addr", "fe80::1%eth0"), fleetOptions{}, "link-local"},
		{"unspecified -node-addr", fleet("-node-addr", "::"), fleetOptions{}, "cannot send to it"},
		{"loopback -node-addr", fleet("-node-addr", "::1"), fleetOptions{}, "cannot send to it"},
		{"multicast -node-addr", fleet("-node-addr", "ff02::1"), fleetOptions{}, "cannot send to it"},
		{"garbage -node-addr", fleet("-node-addr", "nope"), fleetOptions{}, "-node-addr \"nope\""},
		{"slash in -node", fleet(append(listen, "-node", "a/b")...), fleetOptions{}, "-node \"a/b\""},
		{"empty -node", fleet(append(listen, "-node", "")...), fleetOptions{}, "-node \"\""},
		{"-node starting with -", fleet(append(listen, "-node", "-a")...), fleetOptions{}, "-node"},
		{"-node too long", fleet(append(listen, "-node", strings.Repeat("n", 64))...), fleetOptions{}, "-node"},
		{"blocks as wide as the pool", fleet(append(listen, "-block-bits", "24")...), fleetOptions{}, "-block-bits 24"},
		{"blocks of two", fleet(append(listen, "-block-bits", "31")...), fleetOptions{}, "-block-bits 31"},
		{"TTL too short", fleet(append(listen, "-etcd-ttl", "1s")...), fleetOptions{}, "-etcd-ttl 1s out of range"},
		{"TTL too long", fleet(append(listen, "-etcd-ttl", "61m")...), fleetOptions{}, "-etcd-ttl 1h1m0s out of range"},
		{"TTL not whole seconds", fleet(append(listen, "-etcd-ttl", "2500ms")...), fleetOptions{}, "whole seconds"},
		{"prefix without leading /", fleet(append(listen, "-etcd-prefix", "4over6d/")...), fleetOptions{}, "-etcd-prefix"},
		{"prefix without trailing /", fleet(append(listen, "-etcd-prefix", "/4over6d")...), fleetOptions{}, "-etcd-prefix"},
		{"empty prefix", fleet(append(listen, "-etcd-prefix", "")...), fleetOptions{}, "-etcd-prefix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.args, io.Discard, filepath.Join(t.TempDir(), "missing"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseOptions(%q) = %v, want an error with %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseOptions(%q): %v", tc.args, err)
			}
			f := o.fleet
			if !slices.Equal(f.etcd, tc.want.etcd) || f.node != tc.want.node || f.nodeAddr != tc.want.nodeAddr ||
				f.blockBits != tc.want.blockBits || f.ttl != tc.want.ttl || f.prefix != tc.want.prefix {
				t.Fatalf("fleet options %+v, want %+v", f, tc.want)
			}
			if o.inFleet() != (tc.want.etcd != nil) {
				t.Fatalf("inFleet = %v with -etcd %v", o.inFleet(), f.etcd)
			}
		})
	}
}

// TestFleetConfig checks that JoinFleet gets the flags, the settings the
// fleet shares and the overlay's MAC and data plane.
func TestFleetConfig(t *testing.T) {
	o, err := parseOptions([]string{"-pool", "192.0.2.0/24", "-etcd", "http://[2001:db8::10]:2379", "-node", "n1",
		"-node-addr", "2001:db8:2::1", "-block-bits", "27", "-etcd-ttl", "4s", "-etcd-prefix", "/lab/", "-grace", "2m", "-source-prefix", "64"},
		io.Discard, filepath.Join(t.TempDir(), "missing"))
	if err != nil {
		t.Fatal(err)
	}
	dp := newDataPlane(&fakeOverlay{}, &fakeRoutes{})
	mac := []byte{0x02, 0x4f, 0x36, 0, 0, 1}
	cfg := fleetConfig(o, mac, dp, nil)
	want := actors.FleetConfig{Endpoints: []string{"http://[2001:db8::10]:2379"}, Node: "n1", NodeAddr: netip.MustParseAddr("2001:db8:2::1"),
		Pool: netip.MustParsePrefix("192.0.2.0/24"), BlockBits: 27, TTL: 4 * time.Second, Prefix: "/lab/", Grace: 2 * time.Minute, SourcePrefix: 64}
	if !slices.Equal(cfg.Endpoints, want.Endpoints) || cfg.Node != want.Node || cfg.NodeAddr != want.NodeAddr || cfg.Pool != want.Pool ||
		cfg.BlockBits != want.BlockBits || cfg.TTL != want.TTL || cfg.Prefix != want.Prefix || cfg.Grace != want.Grace ||
		cfg.SourcePrefix != want.SourcePrefix || cfg.MAC.String() != "02:4f:36:00:00:01" || cfg.DataPlane != dp {
		t.Fatalf("fleet config %+v, want %+v with the MAC and data plane", cfg, want)
	}
	if got := joinTimeout(cfg.TTL); got != 8*time.Second {
		t.Errorf("join timeout %v for TTL %v, want two TTLs", got, cfg.TTL)
	}
}
