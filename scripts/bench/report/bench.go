package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// result is one line of results.jsonl: one metric of one case.
type result struct {
	Case        string   `json:"case"`
	Metric      string   `json:"metric"`
	Error       bool     `json:"error"`
	Mbit        float64  `json:"mbit"`
	Bytes       float64  `json:"bytes"`
	Seconds     float64  `json:"seconds"`
	Retransmits float64  `json:"retransmits"`
	CPU         *float64 `json:"cpu_s"`
	PPS         float64  `json:"pps"`
	SentPackets float64  `json:"sent_packets"`
	LossPct     float64  `json:"loss_pct"`
	P50         float64  `json:"p50_us"`
	P99         float64  `json:"p99_us"`
	Replies     int      `json:"replies"`
	Sent        int      `json:"sent"`
	// Set for the multi-client row (tcp_8c): how many clients, and the
	// slowest and the fastest one's Mbit/s.
	Clients   int     `json:"clients"`
	ClientMin float64 `json:"client_min_mbit"`
	ClientMax float64 `json:"client_max_mbit"`
	// Set by aggregate when a test was repeated: the runs' range and count.
	Min, Max float64 `json:"-"`
	Runs     int     `json:"-"`
}

// cpuPerGB is the CPU seconds of the tunnel processes per 10^9 bytes moved.
func (r result) cpuPerGB() float64 {
	if r.CPU == nil || r.Bytes <= 0 {
		return 0
	}
	return *r.CPU / (r.Bytes / 1e9)
}

type results map[string]map[string]result // case -> metric -> result

func (rs results) get(c, m string) result { return rs[c][m] }

const (
	carrierV6 = "carrier-v6"
	carrierV4 = "carrier-v4"
	four6     = "4over6"
	four6Flat = "4over6-plain"
	floor     = "floor"
	openvpn   = "openvpn"
	wireguard = "wireguard"
)

var (
	caseNames = map[string]string{
		carrierV6: "carrier IPv6 (client → server)",
		carrierV4: "carrier IPv4 (server → internet)",
		four6:     "**4over6d + 4over6c**",
		four6Flat: "4over6 without TUN offloads",
		floor:     "floor: UDP echo between two idle processes (2 wake-ups)",
		openvpn:   "OpenVPN tcp6, no crypto",
		wireguard: "wireguard-go",
	}
	caseOrder   = []string{carrierV6, carrierV4, floor, four6, four6Flat, openvpn, wireguard}
	tunnels     = []string{four6, openvpn, wireguard}
	throughputs = []string{"tcp_up", "tcp_down", "tcp_p4", "tcp_8c"}
	metricNames = map[string]string{"tcp_up": "TCP 1 stream up", "tcp_down": "TCP 1 stream down", "tcp_p4": "TCP 4 streams up",
		"tcp_8c": "TCP 8 clients × 1 stream up, aggregate", "udp": "UDP 1400 B max rate", "udp64": "UDP 64 B max rate"}
	// What each case must produce (the smoke's -check). The multi-client
	// row (tcp_8c) is run for the carrier and the three tunnels, not for
	// 4over6 without offloads, which is only the offloads' baseline.
	carrierMetric = []string{"ping_server", "tcp_up", "tcp_down", "tcp_p4", "udp", "udp64", "tcp_8c"}
	tunnelMetric  = []string{"ping_server", "ping_internet", "tcp_up", "tcp_down", "tcp_p4", "udp", "udp64", "tcp_8c"}
	metricsOf     = map[string][]string{floor: {"ping_server"}, carrierV6: carrierMetric, carrierV4: carrierMetric,
		four6Flat: slices.DeleteFunc(slices.Clone(tunnelMetric), func(m string) bool { return m == "tcp_8c" })}
	// rateCases are the runs of case 4over6-rate: the tunnel with the
	// server's -rate-limit, one TCP stream each way.
	rateCases = []struct {
		name, flag string
		limitMbit  float64
	}{{"4over6-8mbit", "8mbit", 8}, {"4over6-100mbit", "100mbit", 100}}
)

// metricsFor lists the metrics case c must have produced.
func metricsFor(c string) []string {
	if m := metricsOf[c]; m != nil {
		return m
	}
	for _, r := range rateCases {
		if r.name == c {
			return []string{"tcp_up", "tcp_down"}
		}
	}
	return tunnelMetric
}

func runBench(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	dir := fs.String("dir", "", "work directory of run.sh (results.jsonl, machine.json)")
	casesFlag := fs.String("cases", "carrier,4over6,4over6-plain,4over6-rate,openvpn,wireguard", "cases that were run")
	check := fs.Bool("check", false, "fail unless every case produced every number")
	md := fs.String("md", "", "Markdown file whose bench section to rewrite")
	png := fs.String("png", "", "PNG chart to draw with gnuplot")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var m machine
	if err := readJSON(filepath.Join(*dir, "machine.json"), &m); err != nil {
		return err
	}
	rs, err := readResults(filepath.Join(*dir, "results.jsonl"))
	if err != nil {
		return err
	}
	var missing []string
	for _, c := range expandCases(*casesFlag) {
		for _, metric := range metricsFor(c) {
			r, ok := rs[c][metric]
			if !ok || r.Error || (r.Mbit <= 0 && r.P50 <= 0) {
				missing = append(missing, c+" "+metric)
			}
		}
	}
	body := benchMarkdown(m, rs, *png, *md)
	fmt.Fprintln(stdout, body)
	if *md != "" {
		if err := replaceSection(*md, "scripts/bench/run.sh", body); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", *md)
	}
	if *png != "" {
		if err := drawChart(*dir, *png, m, rs); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", *png)
	}
	if len(missing) > 0 {
		fmt.Fprintf(stdout, "missing numbers: %s\n", strings.Join(missing, ", "))
		if *check {
			return fmt.Errorf("%d numbers missing", len(missing))
		}
	} else if *check {
		fmt.Fprintln(stdout, "smoke: every case produced every number")
	}
	return nil
}

func expandCases(list string) []string {
	var out []string
	for _, c := range strings.Split(list, ",") {
		if c == "carrier" {
			out = append(out, carrierV6, carrierV4, floor)
		} else if c == "4over6-rate" {
			for _, r := range rateCases {
				out = append(out, r.name)
			}
		} else if c != "" {
			out = append(out, c)
		}
	}
	return out
}

func readResults(path string) (results, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	all := map[string]map[string][]result{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if all[r.Case] == nil {
			all[r.Case] = map[string][]result{}
		}
		all[r.Case][r.Metric] = append(all[r.Case][r.Metric], r)
	}
	rs := results{}
	for c, metrics := range all {
		rs[c] = map[string]result{}
		for m, runs := range metrics {
			rs[c][m] = aggregate(runs)
		}
	}
	return rs, sc.Err()
}

// aggregate reduces repeated runs of one test to the median run (by
// throughput), with the range of the runs, and CPU per GB over all of them.
// A failed run makes the whole test count as failed.
func aggregate(runs []result) result {
	var ok []result
	for _, r := range runs {
		if r.Error {
			return r
		}
		ok = append(ok, r)
	}
	slices.SortFunc(ok, func(a, b result) int { return cmp.Compare(a.Mbit, b.Mbit) })
	med := ok[len(ok)/2]
	med.Min, med.Max, med.Runs = ok[0].Mbit, ok[len(ok)-1].Mbit, len(ok)
	if med.CPU != nil {
		var cpu, bytes float64
		for _, r := range ok {
			if r.CPU != nil {
				cpu += *r.CPU
			}
			bytes += r.Bytes
		}
		// Keep cpuPerGB of the median run equal to the ratio over all runs.
		scaled := cpu / bytes * med.Bytes
		med.CPU = &scaled
	}
	return med
}

// ceiling is the carrier's value for a throughput metric: a tunnelled flow
// crosses both legs, so the slower leg bounds it.
func ceiling(rs results, metric string) float64 {
	a, b := value(rs.get(carrierV6, metric), metric), value(rs.get(carrierV4, metric), metric)
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}

// value is the number a metric is compared by: received packets/s for
// UDP, the p50 in µs for an RTT, Mbit/s otherwise.
func value(r result, metric string) float64 {
	switch {
	case strings.HasPrefix(metric, "udp"):
		return r.PPS
	case strings.HasPrefix(metric, "ping"):
		return r.P50
	}
	return r.Mbit
}

func benchMarkdown(m machine, rs results, png, md string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("### Data path: 4over6d against the carrier, OpenVPN and wireguard-go\n\n")
	w("Measured by `sudo scripts/bench/run.sh` on %s. iperf3 %s, %d s per test; %d pings at 10 ms; OpenVPN %s; wireguard-go %s.\n\n",
		m.describe(), m.IPerf3, m.Seconds, m.Pings, orDash(m.OpenVPN), wireguardVersion(m))
	if l := m.peakLoad(); m.NProc > 0 && l > 2*float64(m.NProc) {
		w("**Loaded machine:** the 1-minute load average reached %.1f on %d cores during this run, so the cases competed with other work for the CPU, unevenly over the run; even ratios between cases of this run are uncertain (the carrier's numbers, which every ratio to the carrier divides by, move the most).\n\n", l, m.NProc)
	}

	w("| case | TCP 1 stream up, Mbit/s | TCP 1 stream down | TCP 4 streams up | TCP %s clients × 1 stream up, aggregate (slowest–fastest client) | UDP 1400 B: received packets/s (loss) | UDP 64 B: received packets/s (loss) | RTT to server p50 / p99, µs | RTT to internet host p50 / p99, µs | tunnel CPU s per GB: TCP up / down / %s clients / UDP 1400 B / UDP 64 B |\n", clientsOf(m), clientsOf(m))
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range caseOrder {
		if rs[c] == nil {
			continue
		}
		up, down, p4, multi := rs.get(c, "tcp_up"), rs.get(c, "tcp_down"), rs.get(c, "tcp_p4"), rs.get(c, "tcp_8c")
		udp, udp64 := rs.get(c, "udp"), rs.get(c, "udp64")
		ps, pi := rs.get(c, "ping_server"), rs.get(c, "ping_internet")
		cpu := "–"
		if up.CPU != nil {
			cpu = strings.Join([]string{num(up.cpuPerGB(), "%.2f"), num(down.cpuPerGB(), "%.2f"), num(multi.cpuPerGB(), "%.2f"),
				num(udp.cpuPerGB(), "%.2f"), num(udp64.cpuPerGB(), "%.2f")}, " / ")
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", caseNames[c], mbitCell(up), mbitCell(down),
			num(p4.Mbit, "%.0f"), multiCell(multi), udpCell(udp), udpCell(udp64), pingCell(ps), pingCell(pi), cpu)
	}
	w("\nSingle-stream TCP cells are the median of the runs, with their range in brackets. The carrier rows are the ceiling: a tunnelled flow crosses both legs, so for throughput the slower leg counts; for RTT the IPv6 leg to the server is the like-for-like reference for a ping to the server's inner address (192.0.2.1). UDP loss is what the sender offered beyond what arrived; iperf3 with `-b 0` offers as much as the sending side can produce, so a high loss means the tunnel is the bottleneck. The multi-client cell is %s clients at once, each from its own namespace with its own link to the server and its own tunnel client (4over6c, OpenVPN, wireguard-go peer), one TCP upload each to an iperf3 server of its own; for the carrier, %s plain TCP uploads over the IPv6 leg (from the clients' namespaces) and over the IPv4 leg (from the server's).\n\n", clientsOf(m), clientsOf(m))

	rateTable(w, rs)

	w("Ratios (higher is better for throughput; for RTT the ratio of p50s, lower is better):\n\n")
	w("| metric | 4over6 / carrier | 4over6 / OpenVPN | 4over6 / wireguard-go | 4over6 / 4over6 without offloads | OpenVPN / carrier | wireguard-go / carrier |\n")
	w("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, metric := range []string{"tcp_up", "tcp_down", "tcp_p4", "tcp_8c", "udp", "udp64"} {
		c := ceiling(rs, metric)
		f, o, g := value(rs.get(four6, metric), metric), value(rs.get(openvpn, metric), metric), value(rs.get(wireguard, metric), metric)
		p := value(rs.get(four6Flat, metric), metric)
		w("| %s | %s | %s | %s | %s | %s | %s |\n", metricNames[metric], ratio(f, c), ratio(f, o), ratio(f, g), ratio(f, p), ratio(o, c), ratio(g, c))
	}
	for _, row := range []struct {
		name, metric string
		pick         func(result) float64
	}{
		{"RTT to server p50", "ping_server", func(r result) float64 { return r.P50 }},
		{"RTT to server p99", "ping_server", func(r result) float64 { return r.P99 }},
		{"RTT to internet host p50", "ping_internet", func(r result) float64 { return r.P50 }},
		{"RTT to internet host p99", "ping_internet", func(r result) float64 { return r.P99 }},
	} {
		// The carrier's reference for both is the IPv6 leg to the server:
		// the client namespace has no IPv4 of its own.
		c := row.pick(rs.get(carrierV6, "ping_server"))
		f, o, g := row.pick(rs.get(four6, row.metric)), row.pick(rs.get(openvpn, row.metric)), row.pick(rs.get(wireguard, row.metric))
		p := row.pick(rs.get(four6Flat, row.metric))
		w("| %s | %s | %s | %s | %s | %s | %s |\n", row.name, ratio(f, c), ratio(f, o), ratio(f, g), ratio(f, p), ratio(o, c), ratio(g, c))
	}
	cp := rs.get(carrierV6, "ping_server").P50
	f, o, g := rs.get(four6, "ping_server").P50, rs.get(openvpn, "ping_server").P50, rs.get(wireguard, "ping_server").P50
	w("| RTT to server added to the carrier's, p50 | %s | | | | %s | %s |\n", added(f, cp), added(o, cp), added(g, cp))
	w("\nThe RTT ratios to the carrier compare with the IPv6 leg to the server for both destinations (the client has no IPv4 path of its own).\n\n")

	clientsTable(w, m, rs)
	targetsTable(w, issue17Targets, rs)

	w("\nTargets of the first round:\n\n")
	w("| target | measured | |\n|---|---|---|\n")
	for _, t := range []struct {
		name, peer string
		want       float64
	}{{"single-stream TCP ≥ 4× OpenVPN tcp6", openvpn, 4}, {"single-stream TCP ≥ 1.0× wireguard-go", wireguard, 1}} {
		upR := safeDiv(rs.get(four6, "tcp_up").Mbit, rs.get(t.peer, "tcp_up").Mbit)
		downR := safeDiv(rs.get(four6, "tcp_down").Mbit, rs.get(t.peer, "tcp_down").Mbit)
		if upR == 0 && downR == 0 {
			w("| %s | not measured | |\n", t.name)
			continue
		}
		w("| %s | %.2f× up, %.2f× down | %s |\n", t.name, upR, downR, verdict(upR >= t.want && downR >= t.want))
	}
	if f > 0 && cp > 0 {
		floorCell := ""
		if fl := rs.get(floor, "ping_server").P50; fl > 0 {
			floorCell = fmt.Sprintf("; two idle process wake-ups alone cost %.0f µs here, and a tunnel needs at least three", fl)
		}
		w("| p50 RTT added by the tunnel at idle < 100 µs | %.0f µs (%.0f µs through the tunnel, %.0f µs plain IPv6%s) | %s |\n", f-cp, f, cp, floorCell, verdict(f-cp < 100))
	} else {
		w("| p50 RTT added by the tunnel at idle < 100 µs | not measured | |\n")
	}
	if png != "" && md != "" {
		rel, err := filepath.Rel(filepath.Dir(md), png)
		if err == nil {
			w("\n![throughput, RTT and CPU per GB of each case](%s)\n", filepath.ToSlash(rel))
		}
	}
	return b.String()
}

// rateTable reports the 4over6-rate runs, if any: the throughput achieved
// through a server with -rate-limit, and its ratio to the limit.
func rateTable(w func(string, ...any), rs results) {
	var rows []string
	for _, r := range rateCases {
		if rs[r.name] == nil {
			continue
		}
		cell := func(metric string) string {
			m := rs.get(r.name, metric).Mbit
			if m <= 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f (%.2f×)", m, m/r.limitMbit)
		}
		rows = append(rows, fmt.Sprintf("| `-rate-limit %s` | %s | %s |\n", r.flag, cell("tcp_up"), cell("tcp_down")))
	}
	if len(rows) == 0 {
		return
	}
	w("Rate limit: the same tunnel with the server's `-rate-limit`, one TCP stream each way, once; achieved Mbit/s and the ratio to the limit. Uploads are paced (the server reads no faster, so TCP slows the client down and nothing is dropped), downloads policed (packets beyond the bucket are dropped and TCP backs off, so they stay further below the limit). The bucket's burst (50 ms of the rate, at least 128 KiB) is in the numbers: over a short test it can lift the ratio a little above 1.\n\n")
	w("| server flag | TCP 1 stream up, Mbit/s (× limit) | TCP 1 stream down |\n|---|---:|---:|\n")
	for _, row := range rows {
		w("%s", row)
	}
	w("\n")
}

// clientsTable compares each case's multi-client aggregate with its own
// single stream up: what a second core (or the lack of one) gives.
func clientsTable(w func(string, ...any), m machine, rs results) {
	var rows []string
	for _, c := range []string{carrierV6, carrierV4, four6, openvpn, wireguard} {
		multi, one := rs.get(c, "tcp_8c").Mbit, rs.get(c, "tcp_up").Mbit
		if multi <= 0 && one <= 0 {
			continue
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |\n", caseNames[c], num(one, "%.0f"), num(multi, "%.0f"), ratio(multi, one)))
	}
	if len(rows) == 0 {
		return
	}
	w("Many clients against one (%s clients × 1 TCP stream up, aggregate, against the same case's single stream up, median):\n\n", clientsOf(m))
	w("| case | 1 stream up, Mbit/s | %s clients, aggregate | ratio |\n|---|---:|---:|---:|\n", clientsOf(m))
	for _, row := range rows {
		w("%s", row)
	}
	w("\n")
}

func clientsOf(m machine) string {
	if m.Clients <= 0 {
		return "8"
	}
	return fmt.Sprint(m.Clients)
}

func udpCell(r result) string {
	if r.PPS <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f (%.1f%%)", r.PPS, r.LossPct)
}

func multiCell(r result) string {
	if r.Mbit <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f (%.0f–%.0f)", r.Mbit, r.ClientMin, r.ClientMax)
}

// mbitCell is the median throughput, with the range when the test ran
// several times.
func mbitCell(r result) string {
	if r.Mbit <= 0 {
		return "–"
	}
	if r.Runs > 1 {
		return fmt.Sprintf("%.0f (%.0f–%.0f)", r.Mbit, r.Min, r.Max)
	}
	return fmt.Sprintf("%.0f", r.Mbit)
}

// wireguardVersion names the release wireguard-go reports and, when known,
// the pinned module version it was built from.
func wireguardVersion(m machine) string {
	v := orDash(m.WireGuardGo)
	if m.WireGuardGoModule != "" {
		v += fmt.Sprintf(" (`%s`)", m.WireGuardGoModule)
	}
	return v
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func pingCell(r result) string {
	if r.P50 <= 0 {
		return "–"
	}
	s := fmt.Sprintf("%.0f / %.0f", r.P50, r.P99)
	if r.Replies < r.Sent {
		s += fmt.Sprintf(" (%d/%d replies)", r.Replies, r.Sent)
	}
	return s
}

func added(a, base float64) string {
	if a <= 0 || base <= 0 {
		return "–"
	}
	return fmt.Sprintf("%+.0f µs", a-base)
}

func safeDiv(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// drawChart writes a gnuplot data file and script next to the results and
// runs gnuplot: throughput per case, RTT per tunnel, CPU per GB per tunnel.
func drawChart(dir, png string, m machine, rs results) error {
	// The carrier runs at several Gbit/s and would flatten the tunnels'
	// bars, so it is named in the panel title instead of drawn.
	var thr strings.Builder
	thr.WriteString("metric\t4over6\tOpenVPN\twireguard-go\n")
	short := map[string]string{"tcp_up": "1 up", "tcp_down": "1 down", "tcp_p4": "4 up", "tcp_8c": "8 clients up"}
	var ceil []string
	for _, metric := range throughputs {
		fmt.Fprintf(&thr, "\"%s\"\t%.1f\t%.1f\t%.1f\n", short[metric],
			rs.get(four6, metric).Mbit, rs.get(openvpn, metric).Mbit, rs.get(wireguard, metric).Mbit)
		ceil = append(ceil, fmt.Sprintf("%.1f", ceiling(rs, metric)/1000))
	}
	var rtt strings.Builder
	rtt.WriteString("case\tp50\tp99\n")
	fmt.Fprintf(&rtt, "\"plain IPv6\"\t%.0f\t%.0f\n", rs.get(carrierV6, "ping_server").P50, rs.get(carrierV6, "ping_server").P99)
	var cpu strings.Builder
	cpu.WriteString("case\tup\tdown\n")
	for _, c := range tunnels {
		label := map[string]string{four6: "4over6", openvpn: "OpenVPN", wireguard: "wireguard-go"}[c]
		fmt.Fprintf(&rtt, "\"%s\"\t%.0f\t%.0f\n", label, rs.get(c, "ping_server").P50, rs.get(c, "ping_server").P99)
		fmt.Fprintf(&cpu, "\"%s\"\t%.2f\t%.2f\n", label, rs.get(c, "tcp_up").cpuPerGB(), rs.get(c, "tcp_down").cpuPerGB())
	}
	files := map[string]string{"thr.dat": thr.String(), "rtt.dat": rtt.String(), "cpu.dat": cpu.String()}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(png), 0o755); err != nil {
		return err
	}
	abs, err := filepath.Abs(png)
	if err != nil {
		return err
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1500,560 font "sans,10"
set output %q
set multiplot layout 1,3 title %q
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key below horizontal autotitle columnhead
set grid ytics
set yrange [0:*]
set xtics nomirror
set title "TCP throughput through the tunnel, Mbit/s, by streams\n(carrier, off scale: %s Gbit/s)"
plot "thr.dat" using 2:xtic(1) lc rgb "#d62728", "" using 3 lc rgb "#1f77b4", "" using 4 lc rgb "#2ca02c"
set title "RTT to the server (inner address), µs, log scale\n(idle, 10 ms between pings)"
set logscale y
set yrange [10:*]
plot "rtt.dat" using 2:xtic(1) lc rgb "#ff7f0e", "" using 3 lc rgb "#8c564b"
unset logscale y
set yrange [0:*]
set title "CPU seconds of both tunnel processes per GB\n(single-stream TCP)"
plot "cpu.dat" using 2:xtic(1) lc rgb "#9467bd", "" using 3 lc rgb "#17becf"
unset multiplot
`, abs, fmt.Sprintf("4over6d data path, %s, commit %s, %d × %s", m.Date, m.Commit, m.NProc, m.CPU), strings.Join(ceil, " / "))
	if err := os.WriteFile(filepath.Join(dir, "chart.gp"), []byte(script), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("gnuplot", "chart.gp")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, out)
	}
	return nil
}
