package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run17 is a run in which every #17 target has its numbers: some met,
// some missed.
func run17() results {
	return results{
		carrierV6: {"ping_server": {P50: 50, P99: 90}, "tcp_up": {Mbit: 10000}, "tcp_down": {Mbit: 9000},
			"udp": {PPS: 100000}, "udp64": {PPS: 120000}, "tcp_8c": {Mbit: 16000, Clients: 8, ClientMin: 1500, ClientMax: 2500}},
		carrierV4: {"ping_server": {P50: 45}, "tcp_up": {Mbit: 12000}, "tcp_down": {Mbit: 8000},
			"udp": {PPS: 240000}, "udp64": {PPS: 300000}, "tcp_8c": {Mbit: 18000}},
		floor:     {"ping_server": {P50: 220, P99: 300}},
		four6:     {"ping_server": {P50: 300, P99: 900}, "ping_internet": {P50: 500, P99: 1000}, "tcp_up": {Mbit: 6000}, "tcp_down": {Mbit: 4500}, "udp": {PPS: 60000}, "udp64": {PPS: 90000}, "tcp_8c": {Mbit: 7500, ClientMin: 800, ClientMax: 1100}},
		openvpn:   {"ping_server": {P50: 400}, "ping_internet": {P50: 400}, "tcp_up": {Mbit: 200}, "udp64": {PPS: 30000}, "tcp_8c": {Mbit: 250}},
		wireguard: {"ping_server": {P50: 600}, "ping_internet": {P50: 650}, "tcp_up": {Mbit: 1300}, "udp64": {PPS: 50000}},
	}
}

func TestIssue17TargetsEval(t *testing.T) {
	rs := run17()
	// By name, what run17 must give: the ratio, met or not, and by how much.
	want := map[string]outcome{
		"idle RTT p50 to the server's inner address ≤ OpenVPN tcp6's":                 {true, 0.75, true, 0.25},
		"idle RTT p50 to the internet host ≤ OpenVPN tcp6's":                          {true, 1.25, false, 0.25},
		"UDP 1400 B, packets/s received ≥ 0.5× the carrier":                           {true, 0.6, true, 0.2}, // the slower leg, v6
		"UDP 64 B, packets/s received ≥ 2× OpenVPN":                                   {true, 3, true, 0.5},
		"UDP 64 B, packets/s received ≥ 2× wireguard-go":                              {true, 1.8, false, 0.1},
		"single-stream TCP up ≥ 0.6× the carrier":                                     {true, 0.6, true, 0},
		"single-stream TCP down ≥ 0.6× the carrier":                                   {true, 0.5625, false, 0.0625}, // v4 is slower down
		"8 clients, one TCP stream each, aggregate ≥ 1.5× one client's single stream": {true, 1.25, false, 1 - 1.25/1.5},
	}
	if len(issue17Targets) != len(want) {
		t.Fatalf("%d targets, want %d", len(issue17Targets), len(want))
	}
	for _, tg := range issue17Targets {
		t.Run(tg.name, func(t *testing.T) {
			w, ok := want[tg.name]
			if !ok {
				t.Fatalf("unexpected target")
			}
			got := tg.eval(rs)
			if got.measured != w.measured || got.met != w.met || !near(got.ratio, w.ratio) || !near(got.by, w.by) {
				t.Errorf("eval = %+v, want %+v", got, w)
			}
		})
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestTargetEvalEdges(t *testing.T) {
	atLeast := target{num: of("a", four6, "tcp_up"), den: of("b", openvpn, "tcp_up"), bound: 2}
	atMost := target{num: of("a", four6, "ping_server"), den: of("b", openvpn, "ping_server"), bound: 1, atMost: true}
	for _, tc := range []struct {
		name   string
		tg     target
		rs     results
		want   outcome
		answer string
	}{
		{"exactly at the bound is met", atLeast, results{four6: {"tcp_up": {Mbit: 400}}, openvpn: {"tcp_up": {Mbit: 200}}},
			outcome{true, 2, true, 0}, "**met**, by 0%"},
		{"below a lower bound is missed", atLeast, results{four6: {"tcp_up": {Mbit: 300}}, openvpn: {"tcp_up": {Mbit: 200}}},
			outcome{true, 1.5, false, 0.25}, "**missed**, by 25%"},
		{"above an upper bound is missed", atMost, results{four6: {"ping_server": {P50: 900}}, openvpn: {"ping_server": {P50: 300}}},
			outcome{true, 3, false, 2}, "**missed**, by 200%"},
		{"below an upper bound is met", atMost, results{four6: {"ping_server": {P50: 150}}, openvpn: {"ping_server": {P50: 300}}},
			outcome{true, 0.5, true, 0.5}, "**met**, by 50%"},
		{"a missing peer is not measured", atLeast, results{four6: {"tcp_up": {Mbit: 400}}}, outcome{}, "not measured"},
		{"a failed test is not measured", atMost, results{four6: {"ping_server": {Error: true}}, openvpn: {"ping_server": {P50: 300}}},
			outcome{}, "not measured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.tg.eval(tc.rs)
			if got.measured != tc.want.measured || got.met != tc.want.met || !near(got.ratio, tc.want.ratio) || !near(got.by, tc.want.by) {
				t.Errorf("eval = %+v, want %+v", got, tc.want)
			}
			if c := got.verdictCell(); c != tc.answer {
				t.Errorf("verdict %q, want %q", c, tc.answer)
			}
		})
	}
}

// The report carries the new rows (UDP 64 B, 8 clients), the clients
// table, every RTT's p99 ratio and the #17 targets with their verdicts.
func TestBenchMarkdownNewRows(t *testing.T) {
	md := benchMarkdown(machine{Clients: 8}, run17(), "", "")
	for _, want := range []string{
		"| UDP 64 B: received packets/s (loss) |",
		"| TCP 8 clients × 1 stream up, aggregate (slowest–fastest client) |",
		"| 7500 (800–1100) |",
		"| UDP 64 B max rate | 0.75× | 3.00× | 1.80× |",
		"| TCP 8 clients × 1 stream up, aggregate | 0.47× | 30.00× | – |",
		"| RTT to server p99 | 10.00× |",
		"| RTT to internet host p50 | 10.00× | 1.25× |",
		"| **4over6d + 4over6c** | 6000 | 7500 | 1.25× |",
		"| carrier IPv6 (client → server) | 10000 | 16000 | 1.60× |",
		"Targets of #17",
		"| idle RTT p50 to the server's inner address ≤ OpenVPN tcp6's | 4over6 300 µs, OpenVPN 400 µs (plain IPv6 50 µs, floor of 2 process wake-ups 220 µs) | 0.75× | ≤ 1× | **met**, by 25% |",
		"| UDP 64 B, packets/s received ≥ 2× wireguard-go | 4over6 90000 packets/s, wireguard-go 50000 packets/s (carrier 120000 packets/s) | 1.80× | ≥ 2× | **missed**, by 10% |",
		"| 8 clients, one TCP stream each, aggregate ≥ 1.5× one client's single stream | 8 clients 7500 Mbit/s, 1 stream 6000 Mbit/s (the carrier's own ratio: IPv6 leg 1.60×, IPv4 leg 1.50×) | 1.25× | ≥ 1.5× | **missed**, by 17% |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", md)
	}
	empty := benchMarkdown(machine{}, results{}, "", "")
	if !strings.Contains(empty, "| single-stream TCP up ≥ 0.6× the carrier | 4over6 –, carrier – | – | ≥ 0.6× | not measured |") {
		t.Errorf("a run without numbers does not say the targets were not measured:\n%s", empty)
	}
}

func TestMetricsForNewRows(t *testing.T) {
	for _, tc := range []struct {
		c        string
		has, not []string
	}{
		{carrierV6, []string{"udp", "udp64", "tcp_8c", "ping_server"}, []string{"ping_internet"}},
		{carrierV4, []string{"udp64", "tcp_8c"}, nil},
		{four6, []string{"udp64", "tcp_8c", "ping_internet"}, nil},
		{four6Flat, []string{"udp64", "tcp_p4"}, []string{"tcp_8c"}},
		{openvpn, []string{"udp64", "tcp_8c"}, nil},
		{wireguard, []string{"udp64", "tcp_8c"}, nil},
		{floor, []string{"ping_server"}, []string{"udp64", "tcp_8c"}},
		{"4over6-8mbit", []string{"tcp_up"}, []string{"udp64", "tcp_8c"}},
	} {
		got := " " + strings.Join(metricsFor(tc.c), " ") + " "
		for _, m := range tc.has {
			if !strings.Contains(got, " "+m+" ") {
				t.Errorf("metricsFor(%s) = %q lacks %s", tc.c, got, m)
			}
		}
		for _, m := range tc.not {
			if strings.Contains(got, " "+m+" ") {
				t.Errorf("metricsFor(%s) = %q has %s", tc.c, got, m)
			}
		}
	}
}

// -check fails a run whose multi-client or 64-byte row is missing or
// failed, and passes once it is there; the row's JSON from run.sh's
// iperf_multi is read with its client fields.
func TestCheckNeedsNewRows(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "machine.json"), []byte(`{"clients":8}`), 0o644); err != nil {
		t.Fatal(err)
	}
	base := `{"case":"openvpn","metric":"ping_server","p50_us":400,"p99_us":900,"replies":20,"sent":20}
{"case":"openvpn","metric":"ping_internet","p50_us":410,"p99_us":900,"replies":20,"sent":20}
{"case":"openvpn","metric":"tcp_up","mbit":200,"bytes":25000000,"seconds":1,"cpu_s":0.8}
{"case":"openvpn","metric":"tcp_down","mbit":220,"bytes":27500000,"seconds":1,"cpu_s":0.9}
{"case":"openvpn","metric":"tcp_p4","mbit":160,"bytes":20000000,"seconds":1,"cpu_s":0.9}
{"case":"openvpn","metric":"udp","mbit":100,"pps":9800,"loss_pct":95,"cpu_s":0.6}
`
	udp64 := `{"case":"openvpn","metric":"udp64","mbit":15,"pps":29500,"loss_pct":89,"cpu_s":0.6}` + "\n"
	multi := `{"case":"openvpn","metric":"tcp_8c","clients":8,"mbit":245,"bytes":30625000,"seconds":1.03,"retransmits":3,"client_min_mbit":23.5,"client_max_mbit":44.2,"cpu_s":1.4}` + "\n"
	failed := `{"case":"openvpn","metric":"tcp_8c","error":true}` + "\n"
	for _, tc := range []struct {
		name, lines string
		ok          bool
	}{
		{"without the new rows", base, false},
		{"without the multi-client row", base + udp64, false},
		{"with a failed multi-client row", base + udp64 + failed, false},
		{"with both", base + udp64 + multi, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, "results.jsonl"), []byte(tc.lines), 0o644); err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			err := runBench([]string{"-dir", dir, "-cases", "openvpn", "-check"}, &out)
			if (err == nil) != tc.ok {
				t.Fatalf("runBench -check: %v, want ok=%v\n%s", err, tc.ok, out.String())
			}
			if tc.ok && !strings.Contains(out.String(), "| 245 (24–44) |") {
				t.Errorf("multi-client cell not in the report:\n%s", out.String())
			}
		})
	}
}

// A run on a machine busy beyond twice its cores says so above its tables.
func TestLoadWarning(t *testing.T) {
	for _, tc := range []struct {
		name   string
		m      machine
		peak   float64
		warned bool
	}{
		{"quiet", machine{NProc: 2, LoadBefore: "0.56 1.10 1.36", LoadAfter: "3.69 2.62 1.95"}, 3.69, false},
		{"loaded after", machine{NProc: 2, LoadBefore: "6.31 4.90 4.26", LoadAfter: "14.09 11.77 8.12"}, 14.09, true},
		{"loaded before", machine{NProc: 2, LoadBefore: "9.5 1 1", LoadAfter: "2 1 1"}, 9.5, true},
		{"at the bound", machine{NProc: 2, LoadBefore: "4.00 1 1", LoadAfter: "1 1 1"}, 4, false},
		{"not recorded", machine{NProc: 2}, 0, false},
		{"unparsable", machine{NProc: 2, LoadBefore: "high", LoadAfter: ""}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.m.peakLoad(); got != tc.peak {
				t.Errorf("peakLoad = %g, want %g", got, tc.peak)
			}
			md := benchMarkdown(tc.m, run17(), "", "")
			if got := strings.Contains(md, "**Loaded machine:**"); got != tc.warned {
				t.Errorf("warned = %v, want %v:\n%s", got, tc.warned, md[:min(len(md), 600)])
			}
		})
	}
}
