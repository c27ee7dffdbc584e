package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// loadReport mirrors the JSON report of cmd/4over6-load.
type loadReport struct {
	Requested    int            `json:"requested"`
	Established  int            `json:"established"`
	Failed       int            `json:"failed"`
	Failures     map[string]int `json:"failures"`
	Lost         int            `json:"lost"`
	LostBy       map[string]int `json:"lost_by"`
	SetupSeconds float64        `json:"setup_seconds"`
	SetupRate    float64        `json:"setup_rate"`
	Latency      struct {
		P50, P90, P99, Max, Mean float64
	} `json:"setup_latency_ms"`
	HoldSeconds  float64 `json:"hold_seconds"`
	PacketsSent  float64 `json:"packets_sent"`
	BytesSent    float64 `json:"bytes_sent"`
	DataReceived float64 `json:"packets_received"`
	DataBytes    float64 `json:"bytes_received"`
}

type sinkReport struct {
	Packets  float64 `json:"packets"`
	Bytes    float64 `json:"bytes"`
	Echoed   float64 `json:"echoed"`
	Sources  int     `json:"sources"`
	Seconds  float64 `json:"seconds"`
	PPS      float64 `json:"pps"`
	MbitIPv4 float64 `json:"mbit_ipv4"`
}

// scaleRun is one idle-sessions measurement of scale.sh.
type scaleRun struct {
	N           int        `json:"n"`
	Load        loadReport `json:"load"`
	RSS0        float64    `json:"rss0_kib"` // before any session
	RSS1        float64    `json:"rss1_kib"` // sessions set up, 5 s later
	RSS2        float64    `json:"rss2_kib"` // after the idle window
	Gor0        float64    `json:"goroutines0"`
	Gor1        float64    `json:"goroutines1"`
	Heap0       float64    `json:"heap0_bytes"`
	Heap1       float64    `json:"heap1_bytes"`
	Heap2       float64    `json:"heap2_bytes"`
	Stack0      float64    `json:"stack0_bytes"`
	Stack1      float64    `json:"stack1_bytes"`
	IdleCPU     float64    `json:"idle_cpu_s"`
	IdleSeconds float64    `json:"idle_seconds"`
	Sessions    float64    `json:"server_sessions"` // the server's own gauge at the reading
}

type activeRun struct {
	Sessions   int        `json:"sessions"`
	PPS        float64    `json:"pps_per_session"`
	Size       int        `json:"size"`
	Seconds    float64    `json:"seconds"`
	Load       loadReport `json:"load"`
	Sink       sinkReport `json:"sink"`
	ServerCPU  float64    `json:"server_cpu_s"`
	RSS        float64    `json:"rss_kib"`
	ServerDrop string     `json:"server_drops"`
	ServerIn   float64    `json:"server_packets_in"`
	ServerOut  float64    `json:"server_packets_out"`
	HWM        float64    `json:"hwm_kib"`
	Softnet    float64    `json:"softnet_drops"`
	TUN        *tunStats  `json:"tun"`
	// Settled is the account of every packet, read once the server had
	// forwarded what was in flight when the sessions closed and the sink
	// had stopped (runs before it have none).
	Settled *settledCounts `json:"settled"`
}

type tunStats struct {
	RxPackets float64 `json:"rx_packets"`
	RxDropped float64 `json:"rx_dropped"`
	TxPackets float64 `json:"tx_packets"`
	TxDropped float64 `json:"tx_dropped"`
	TxQLen    float64 `json:"txqlen"`
}

type settledCounts struct {
	PacketsIn   float64            `json:"packets_in"`
	PacketsOut  float64            `json:"packets_out"`
	TUN         tunStats           `json:"tun"`
	Drops       map[string]float64 `json:"drops"`
	SinkRcvbuf  float64            `json:"sink_rcvbuf_errors"`
	SinkNoPort  float64            `json:"sink_no_port"`
	ReaderWaits float64            `json:"tun_reader_waits"`
	ReaderWaitS float64            `json:"tun_reader_wait_s"`
}

type scaleDoc struct {
	Machine     machine     `json:"machine"`
	Pool        string      `json:"pool"`
	Sources     int         `json:"sources"`
	Concurrency int         `json:"concurrency"`
	Idle        []scaleRun  `json:"idle"`
	Active      []activeRun `json:"active"`
}

func runScale(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	in := fs.String("json", "", "scale.json written by scale.sh")
	md := fs.String("md", "", "Markdown file whose scale section to rewrite")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var d scaleDoc
	if err := readJSON(*in, &d); err != nil {
		return err
	}
	body := scaleMarkdown(d)
	fmt.Fprintln(stdout, body)
	if *md != "" {
		if err := replaceSection(*md, "scripts/bench/scale.sh", body); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", *md)
	}
	return nil
}

func scaleMarkdown(d scaleDoc) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("### Scale: idle sessions and 50 active sessions\n\n")
	w("Measured by `sudo scripts/bench/scale.sh` on %s. The load generator (`cmd/4over6-load`) runs on the same machine, "+
		"from %d IPv6 source addresses, %d setups in flight; the server runs with `-pool %s -max-per-source 0` and default "+
		"timers (heartbeat 20 s, timeout 60 s), logging at info to a file; a fresh server for each row.\n\n",
		d.Machine.describe(), d.Sources, d.Concurrency, d.Pool)
	w("| idle sessions | established / failed / lost | setup rate, sessions/s | setup latency p50 / p99 / max, ms | RSS per session, KiB (after setup → after idle) | Go heap in use per session, KiB (after setup → after idle) | goroutine stacks per session, KiB | goroutines per session | server CPU while idle, %% of one core |\n")
	w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range d.Idle {
		n := float64(r.N)
		w("| %d | %d / %d / %d | %.0f | %.1f / %.1f / %.1f | %.1f → %.1f | %.1f → %.1f | %.1f | %.2f | %.2f |\n",
			r.N, r.Load.Established, r.Load.Failed, r.Load.Lost, r.Load.SetupRate,
			r.Load.Latency.P50, r.Load.Latency.P99, r.Load.Latency.Max,
			(r.RSS1-r.RSS0)/n, (r.RSS2-r.RSS0)/n, (r.Heap1-r.Heap0)/1024/n, (r.Heap2-r.Heap0)/1024/n,
			(r.Stack1-r.Stack0)/1024/n, (r.Gor1-r.Gor0)/n,
			100*r.IdleCPU/max(r.IdleSeconds, 1))
	}
	w("\nRSS per session is (VmRSS with the sessions − VmRSS of the fresh server) / N, read 5 s after the last setup and again after the %0.f s idle window; the Go figures come from `/metrics` the same way (`go_memstats_heap_inuse_bytes`, `go_memstats_stack_inuse_bytes`, `go_goroutines`); heap in use counts whole spans, including pooled buffers whose untouched pages are not resident, so it can exceed the RSS growth. Idle CPU is utime+stime of 4over6d over the idle window, while every session and the server exchange heartbeats.\n",
		firstIdleSeconds(d))
	for _, r := range d.Idle {
		if len(r.Load.Failures) > 0 || len(r.Load.LostBy) > 0 {
			w("\nFailures at %d sessions: %v; lost while held: %v.\n", r.N, r.Load.Failures, r.Load.LostBy)
		}
	}
	if len(d.Active) > 0 {
		a0 := d.Active[0]
		w("\n**%d active sessions**, each sending UDP packets of %d bytes (IPv4) through its tunnel to a sink on the internet host, which echoes every packet back (so the server carries both directions), for %.0f s per row; a fresh server per row. \"Written\" is what the sessions got into their TCP connections (TCP flow control holds back what the server does not read).\n\n",
			a0.Sessions, a0.Size, a0.Seconds)
		w("| packets/s per session | written by the sessions, packets/s | entered the server (102 accepted), packets/s | uplink received at the sink | downlink received by the sessions | server CPU, %% of one core | server RSS at the end / peak |\n|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, a := range d.Active {
			secs := max(a.Seconds, 1)
			down := a.Load.DataReceived / secs
			w("| %.0f | %.0f | %.0f | %.0f packets/s, %.0f Mbit/s | %.0f packets/s, %.0f Mbit/s | %.0f | %.0f / %.0f MiB |\n",
				a.PPS, a.Load.PacketsSent/secs, a.ServerIn/secs, a.Sink.PPS, a.Sink.MbitIPv4,
				down, down*float64(a.Size)*8/1e6, 100*a.ServerCPU/secs, a.RSS/1024, a.HWM/1024)
		}
		w("\n")
		for _, a := range d.Active {
			if a.Settled != nil {
				w("%s", dropAccount(a))
				continue
			}
			w("At %.0f packets/s per session: the server counted %.0f packets into its TUN path and %.0f out of it to the sessions",
				a.PPS, a.ServerIn, a.ServerOut)
			if a.TUN != nil {
				w("; the TUN device itself saw %.0f packets written by the server (rx, %.0f dropped) and %.0f read (tx, %.0f dropped)",
					a.TUN.RxPackets, a.TUN.RxDropped, a.TUN.TxPackets, a.TUN.TxDropped)
			}
			w("; kernel input-backlog drops (machine-wide) %.0f", a.Softnet)
			if a.ServerDrop != "" {
				w("; server drop counters %s", a.ServerDrop)
			}
			w(".\n\n")
		}
	}
	w("\nTargets of the issue:\n\n| target | measured | |\n|---|---|---|\n")
	var big *scaleRun
	for i := range d.Idle {
		if d.Idle[i].N >= 10000 {
			big = &d.Idle[i]
		}
	}
	if big == nil {
		w("| 10,000 idle sessions under 16 KiB RSS each | not measured | |\n| setup rate above 5,000 sessions/s | not measured | |\n")
		return b.String()
	}
	n := float64(big.N)
	per := max((big.RSS1-big.RSS0)/n, (big.RSS2-big.RSS0)/n)
	w("| 10,000 idle sessions under 16 KiB RSS each | %.1f KiB per session (the larger of the two readings), %d of %d established | %s |\n",
		per, big.Load.Established, big.N, verdict(per < 16 && big.Load.Established == big.N))
	w("| setup rate above 5,000 sessions/s | %.0f sessions/s over %d sessions (p50 %.1f ms, p99 %.1f ms) | %s |\n",
		big.Load.SetupRate, big.Load.Established, big.Load.Latency.P50, big.Load.Latency.P99, verdict(big.Load.SetupRate > 5000))
	w("%s", hugeIdleTarget(d))
	return b.String()
}

// hugeIdleTarget is the second round's row: 100,000 idle sessions on one
// node, at most 12 KiB RSS each and at most 10% of a core while idle.
func hugeIdleTarget(d scaleDoc) string {
	const title = "100,000 idle sessions established, ≤ 12 KiB RSS each, idle CPU ≤ 10% of a core"
	for _, r := range d.Idle {
		if r.N < 100000 {
			continue
		}
		n := float64(r.N)
		per := max((r.RSS1-r.RSS0)/n, (r.RSS2-r.RSS0)/n)
		cpu := 100 * r.IdleCPU / max(r.IdleSeconds, 1)
		return fmt.Sprintf("| %s | %d of %d established, %.1f KiB per session (the larger of the two readings), idle CPU %.1f%% of a core | %s |\n",
			title, r.Load.Established, r.N, per, cpu, verdict(r.Load.Established == r.N && per <= 12 && cpu <= 10))
	}
	return "| " + title + " | not measured | |\n"
}

func firstIdleSeconds(d scaleDoc) float64 {
	if len(d.Idle) == 0 {
		return 0
	}
	return d.Idle[0].IdleSeconds
}
