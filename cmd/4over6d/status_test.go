package main

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/4over6d/4over6d/actors"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestPrintStatusGolden(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		doc  statusDoc
	}{
		{"empty", statusDoc{Listen: "[::]:5678", TUN: "4over6", Pool: "192.0.2.0/24", Size: 253}},
		{"two_sessions", statusDoc{Listen: "[::]:5678", TUN: "4over6", Pool: "192.0.2.0/24", Leased: 1, Size: 253,
			Sessions: []sessionStatus{
				{Client: "[2001:db8:1::2]:40312", Addr: "192.0.2.2", Since: now.Add(-3*time.Hour - 4*time.Minute - 5*time.Second),
					LastHeard: now.Add(-2 * time.Second), PacketsIn: 1200, BytesIn: 1_500_000, PacketsOut: 3400, BytesOut: 12_345_678_901, Drops: 3},
				{Client: "[2001:db8:1::3]:40999", Since: now.Add(-1500 * time.Millisecond), LastHeard: now.Add(-1500 * time.Millisecond)},
			}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			printStatus(&out, &tc.doc, now)
			golden := filepath.Join("testdata", "status_"+tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("status output:\n%s\nwant:\n%s", out.String(), want)
			}
		})
	}
}

func TestHumanUnits(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{humanBytes(0), "0 B"}, {humanBytes(1023), "1023 B"}, {humanBytes(1024), "1.00 KiB"},
		{humanBytes(10 << 20), "10.00 MiB"}, {humanBytes(3 << 40), "3.00 TiB"},
		{humanDuration(0), "0s"}, {humanDuration(-time.Second), "0s"}, {humanDuration(61 * time.Second), "1m 1s"},
		{humanDuration(25*time.Hour + 30*time.Second), "25h 0m 30s"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestPrintFleetGolden(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var many []netip.Prefix
	for i := range 5 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(128 + 16*i)}), 28))
	}
	tests := []struct {
		name string
		st   actors.FleetStatus
	}{
		{"fleet_three_nodes", actors.FleetStatus{Self: "node-b", State: "ok", Pool: "192.0.2.0/24", Nodes: []actors.FleetNode{
			{Name: "node-a", Addr: netip.MustParseAddr("2001:db8:1::a"), UpSince: now.Add(-26 * time.Hour),
				Blocks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/26")}, Sessions: 40, Leased: 41},
			{Name: "node-b", Addr: netip.MustParseAddr("2001:db8:1::b"), UpSince: now.Add(-90 * time.Second), Self: true,
				Blocks: many, Claims: []netip.Addr{netip.MustParseAddr("192.0.2.9")}, Sessions: 70, Leased: 72},
			{Name: "node-c", Addr: netip.MustParseAddr("2001:db8:1::c")},
		}}},
		{"fleet_read_only", actors.FleetStatus{Self: "node-a", State: "read-only", Pool: "192.0.2.0/24", Nodes: []actors.FleetNode{
			{Name: "node-a", Addr: netip.MustParseAddr("2001:db8:1::a"), UpSince: now.Add(-time.Hour), Self: true,
				Blocks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/26")}, Sessions: 3, Leased: 3},
		}}},
		{"fleet_no_nodes", actors.FleetStatus{Self: "node-a", State: "ok", Pool: "192.0.2.0/24"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			printFleet(&out, &tc.st, now)
			golden := filepath.Join("testdata", "status_"+tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("status -fleet output:\n%s\nwant:\n%s", out.String(), want)
			}
		})
	}
}
