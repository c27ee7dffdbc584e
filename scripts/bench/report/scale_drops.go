package main

import (
	"fmt"
	"slices"
	"strings"
)

// dropMeaning says, per drop reason of fourover6d_drops_total, which
// bound or event it counts.
var dropMeaning = map[string]string{
	"no_route":         "for an address no session held within -grace",
	"session_ended":    "towards a session that had ended: echoes of its last packets after its client closed, or still queued for it at the close",
	"queue_full":       "a session's queue (-queue packets) or its inbox (16 batches) was full",
	"rate_limit":       "beyond a session's -rate-limit",
	"not_assigned":     "for a session before its 101",
	"tun_write":        "refused by the TUN device",
	"spoofed":          "a client's packet with a source not its own",
	"not_ipv4":         "a client's 102 that is not IPv4",
	"too_big":          "a client's packet above the TUN MTU with DF",
	"before_lease":     "a client's 102 before its 100",
	"client_to_client": "client to client with isolation on",
}

// uplinkDrops are the reasons counted on the way from a client to the TUN;
// the others are on the way from the TUN to a client.
var uplinkDrops = map[string]bool{
	"not_ipv4": true, "before_lease": true, "spoofed": true, "too_big": true, "client_to_client": true, "tun_write": true,
}

// dropAccount accounts for every packet of one active run, each way: where
// each one went, and for each that was lost, the counter that names why.
func dropAccount(a activeRun) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	c := a.Settled
	t := c.TUN
	w("At %.0f packets/s per session, every packet accounted for (counters read once the server had forwarded what was in flight when the sessions closed, and the sink had stopped):\n\n", a.PPS)
	w("- **Up** (sessions → sink): the sessions wrote %.0f; the server forwarded %.0f of them to the TUN", a.Load.PacketsSent, c.PacketsIn)
	up := writeDrops(w, c.Drops, true)
	w(" (the other %.0f were left in the connections when the load generator closed them, 500 ms after it stopped sending, and went with them)",
		a.Load.PacketsSent-c.PacketsIn-up)
	w("; the TUN took %.0f (%.0f dropped by the device; %.0f not accounted for)", t.RxPackets, t.RxDropped, c.PacketsIn-t.RxPackets-t.RxDropped)
	lost := t.RxPackets - a.Sink.Packets
	w("; the sink received %.0f: %.0f were dropped by the sink's kernel because its socket buffer was full (`UdpRcvbufErrors`), %.0f arrived after it had closed its socket (`UdpNoPorts`), %.0f not accounted for.\n",
		a.Sink.Packets, c.SinkRcvbuf, c.SinkNoPort, lost-c.SinkRcvbuf-c.SinkNoPort)
	offered := t.TxPackets + t.TxDropped
	w("- **Down** (sink → sessions): the sink echoed %.0f; the kernel routed %.0f into the TUN (%+.0f: ICMP errors of the internet host's kernel)",
		a.Sink.Echoed, offered, offered-a.Sink.Echoed)
	if t.TxDropped == 0 {
		w(" and dropped none of them (the TUN's TX drops).\n")
	} else {
		w(" and dropped %.0f of them (the TUN's TX drops) because the TUN queue (`txqueuelen` %.0f) was full: the server's one TUN reader read slower than they arrived. %s\n",
			t.TxDropped, t.TxQLen, readerBound(a))
	}
	w("- The server read %.0f from the TUN: %.0f went to the sessions' connections", t.TxPackets, c.PacketsOut)
	down := writeDrops(w, c.Drops, false)
	w("; %.0f not counted by the server (0 unless a packet was lost uncounted: a bug)", t.TxPackets-c.PacketsOut-down)
	w("; the sessions received %.0f (the other %.0f were in connections that closed before their client read them).\n\n",
		a.Load.DataReceived, c.PacketsOut-a.Load.DataReceived)
	w("Machine-wide kernel input-backlog drops: %.0f.\n\n", a.Softnet)
	return b.String()
}

// writeDrops writes the non-zero drop counters of one direction, sorted,
// each with its meaning, and returns their sum.
func writeDrops(w func(string, ...any), drops map[string]float64, uplink bool) float64 {
	var reasons []string
	for r, n := range drops {
		if n != 0 && uplinkDrops[r] == uplink {
			reasons = append(reasons, r)
		}
	}
	slices.Sort(reasons)
	sum := 0.0
	for _, r := range reasons {
		sum += drops[r]
		meaning := dropMeaning[r]
		if meaning == "" {
			meaning = "see actors/metrics.go"
		}
		w(", %.0f dropped as `%s` (%s)", drops[r], r, meaning)
	}
	if len(reasons) == 0 {
		w(", none dropped")
	}
	return sum
}

// readerBound names what held the TUN reader back: the Router's budget of
// batches in flight, when the reader spent a noticeable part of the run
// waiting for it, or else the reader itself.
func readerBound(a activeRun) string {
	share := a.Settled.ReaderWaitS / max(a.Seconds, 1)
	if share >= 0.05 {
		return fmt.Sprintf("It waited for the Router's budget of 16 batches %.0f times, %.2f s in all (%.0f%% of the run): the Router was the bound (`fourover6d_tun_reader_waits_total`).", a.Settled.ReaderWaits, a.Settled.ReaderWaitS, 100*share)
	}
	return fmt.Sprintf("It waited for the Router's budget of 16 batches only %.0f times, %.3f s in all (`fourover6d_tun_reader_waits_total`): the bound was the reader itself, one goroutine on one TUN queue, on two cores shared with the load generator and the sink.", a.Settled.ReaderWaits, a.Settled.ReaderWaitS)
}
