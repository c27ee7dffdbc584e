package main

import (
	"fmt"
	"math"
	"strings"
)

// quantity is one measured number a target compares, with the words that
// name it in the report.
type quantity struct {
	label   string
	get     func(results) float64
	isRatio bool // printed as "1.23×" rather than in the target's unit
}

// of is the value (see value) of one metric of one case.
func of(label, c, metric string) quantity {
	return quantity{label: label, get: func(rs results) float64 { return value(rs.get(c, metric), metric) }}
}

// carrierOf is the carrier's ceiling for a throughput metric.
func carrierOf(metric string) quantity {
	return quantity{label: "carrier", get: func(rs results) float64 { return ceiling(rs, metric) }}
}

// target is one row of an issue's targets: the ratio of two measured
// numbers against a bound, with numbers beside it that explain it (a
// floor the machine sets, the carrier's own ratio).
type target struct {
	name     string
	num, den quantity
	bound    float64
	atMost   bool // met when ratio ≤ bound (latency); otherwise when ≥
	unit     string
	context  []quantity
}

// outcome is a target evaluated on one run's results.
type outcome struct {
	measured bool
	ratio    float64
	met      bool
	by       float64 // |ratio/bound − 1|: how far above or below the bound
}

func (t target) eval(rs results) outcome {
	n, d := t.num.get(rs), t.den.get(rs)
	if n <= 0 || d <= 0 || t.bound <= 0 {
		return outcome{}
	}
	r := n / d
	met := r >= t.bound
	if t.atMost {
		met = r <= t.bound
	}
	return outcome{measured: true, ratio: r, met: met, by: math.Abs(r/t.bound - 1)}
}

// verdictCell is "**met**, by 12%" or "**missed**, by 40%": by how much the
// ratio is past the bound, or short of it.
func (o outcome) verdictCell() string {
	if !o.measured {
		return "not measured"
	}
	return fmt.Sprintf("%s, by %.0f%%", verdict(o.met), o.by*100)
}

// measuredCell gives the two numbers of the ratio and the context.
func (t target) measuredCell(rs results) string {
	format := func(q quantity) string {
		v := q.get(rs)
		if v <= 0 {
			return q.label + " –"
		}
		if q.isRatio {
			return fmt.Sprintf("%s %.2f×", q.label, v)
		}
		return fmt.Sprintf("%s %.0f %s", q.label, v, t.unit)
	}
	s := format(t.num) + ", " + format(t.den)
	var ctx []string
	for _, q := range t.context {
		if q.get(rs) > 0 {
			ctx = append(ctx, format(q))
		}
	}
	if len(ctx) > 0 {
		s += " (" + strings.Join(ctx, ", ") + ")"
	}
	return s
}

func (t target) boundCell() string {
	if t.atMost {
		return fmt.Sprintf("≤ %.2g×", t.bound)
	}
	return fmt.Sprintf("≥ %.2g×", t.bound)
}

// ratioOf is the carrier's own multi-client ratio, which bounds what any
// tunnel can show on this machine.
func ratioOf(label, c, a, b string) quantity {
	return quantity{label: label, isRatio: true, get: func(rs results) float64 { return safeDiv(rs.get(c, a).Mbit, rs.get(c, b).Mbit) }}
}

// issue17Targets are the bench targets of issue #17 (the scale targets are
// in scale.sh's section), each a ratio of two numbers of one run.
var issue17Targets = func() []target {
	wakeups := of("floor of 2 process wake-ups", floor, "ping_server")
	plain := of("plain IPv6", carrierV6, "ping_server")
	return []target{
		{name: "idle RTT p50 to the server's inner address ≤ OpenVPN tcp6's", unit: "µs", bound: 1, atMost: true,
			num: of("4over6", four6, "ping_server"), den: of("OpenVPN", openvpn, "ping_server"), context: []quantity{plain, wakeups}},
		{name: "idle RTT p50 to the internet host ≤ OpenVPN tcp6's", unit: "µs", bound: 1, atMost: true,
			num: of("4over6", four6, "ping_internet"), den: of("OpenVPN", openvpn, "ping_internet"), context: []quantity{plain, wakeups}},
		{name: "UDP 1400 B, packets/s received ≥ 0.5× the carrier", unit: "packets/s", bound: 0.5,
			num: of("4over6", four6, "udp"), den: carrierOf("udp")},
		{name: "UDP 64 B, packets/s received ≥ 2× OpenVPN", unit: "packets/s", bound: 2,
			num: of("4over6", four6, "udp64"), den: of("OpenVPN", openvpn, "udp64"), context: []quantity{carrierOf("udp64")}},
		{name: "UDP 64 B, packets/s received ≥ 2× wireguard-go", unit: "packets/s", bound: 2,
			num: of("4over6", four6, "udp64"), den: of("wireguard-go", wireguard, "udp64"), context: []quantity{carrierOf("udp64")}},
		{name: "single-stream TCP up ≥ 0.6× the carrier", unit: "Mbit/s", bound: 0.6,
			num: of("4over6", four6, "tcp_up"), den: carrierOf("tcp_up")},
		{name: "single-stream TCP down ≥ 0.6× the carrier", unit: "Mbit/s", bound: 0.6,
			num: of("4over6", four6, "tcp_down"), den: carrierOf("tcp_down")},
		{name: "8 clients, one TCP stream each, aggregate ≥ 1.5× one client's single stream", unit: "Mbit/s", bound: 1.5,
			num: of("8 clients", four6, "tcp_8c"), den: of("1 stream", four6, "tcp_up"),
			context: []quantity{ratioOf("the carrier's own ratio: IPv6 leg", carrierV6, "tcp_8c", "tcp_up"),
				ratioOf("IPv4 leg", carrierV4, "tcp_8c", "tcp_up")}},
	}
}()

// targetsTable writes the targets with their measured ratio, met or
// missed, and by how much.
func targetsTable(w func(string, ...any), ts []target, rs results) {
	w("Targets of #17 (each a ratio of two numbers of this run; the scale targets are in the scale.sh section):\n\n")
	w("| target | measured | ratio | bound | |\n|---|---|---:|---:|---|\n")
	for _, t := range ts {
		o := t.eval(rs)
		r := "–"
		if o.measured {
			r = fmt.Sprintf("%.2f×", o.ratio)
		}
		w("| %s | %s | %s | %s | %s |\n", t.name, t.measuredCell(rs), r, t.boundCell(), o.verdictCell())
	}
	w("\n")
}
