package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// loadReport is what a client-mode run prints.
type loadReport struct {
	Requested    int            `json:"requested"`
	Established  int64          `json:"established"`
	Failed       int64          `json:"failed"`
	Failures     map[string]int `json:"failures"`
	Lost         int64          `json:"lost"`
	LostBy       map[string]int `json:"lost_by"`
	SetupSeconds float64        `json:"setup_seconds"` // first dial to last 101
	SetupRate    float64        `json:"setup_rate"`    // sessions per second over SetupSeconds
	Latency      latencies      `json:"setup_latency_ms"`
	HoldSeconds  float64        `json:"hold_seconds"`
	HBSent       uint64         `json:"heartbeats_sent"`
	HBReceived   uint64         `json:"heartbeats_received"`
	PacketsSent  uint64         `json:"packets_sent"`
	BytesSent    uint64         `json:"bytes_sent"`
	DataReceived uint64         `json:"packets_received"` // 103 frames
	DataBytes    uint64         `json:"bytes_received"`
}

type latencies struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func (l *load) report(held time.Duration) *loadReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &loadReport{
		Requested:    l.o.n,
		Established:  l.established.Load(),
		Failed:       l.failed.Load(),
		Failures:     maps.Clone(l.failures),
		Lost:         l.lost.Load(),
		LostBy:       maps.Clone(l.lostBy),
		Latency:      percentiles(l.latencies),
		HoldSeconds:  held.Seconds(),
		HBSent:       l.hbSent.Load(),
		HBReceived:   l.hbRecv.Load(),
		PacketsSent:  l.pktSent.Load(),
		BytesSent:    l.bytesSent.Load(),
		DataReceived: l.dataRecv.Load(),
		DataBytes:    l.dataBytes.Load(),
	}
	if r.Established > 0 {
		r.SetupSeconds = l.lastSetup.Sub(l.firstDial).Seconds()
		if r.SetupSeconds > 0 {
			r.SetupRate = float64(r.Established) / r.SetupSeconds
		}
	}
	return r
}

// percentiles returns nearest-rank percentiles in milliseconds.
func percentiles(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return latencies{P50: ms(rank(0.50)), P90: ms(rank(0.90)), P99: ms(rank(0.99)), Max: ms(s[len(s)-1]),
		Mean: ms(sum / time.Duration(len(s)))}
}

func (r *loadReport) write(w io.Writer, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sessions: %d requested, %d established, %d failed, %d lost while held\n",
		r.Requested, r.Established, r.Failed, r.Lost)
	writeReasons(&b, "setup failures", r.Failures)
	writeReasons(&b, "lost", r.LostBy)
	fmt.Fprintf(&b, "setup: %.3f s from first dial to last 101, %.0f sessions/s\n", r.SetupSeconds, r.SetupRate)
	fmt.Fprintf(&b, "setup latency (dial to 101): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms, mean %.2f ms\n",
		r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max, r.Latency.Mean)
	fmt.Fprintf(&b, "held %.1f s: heartbeats %d sent, %d received\n", r.HoldSeconds, r.HBSent, r.HBReceived)
	if r.PacketsSent > 0 || r.DataReceived > 0 {
		fmt.Fprintf(&b, "data: %d packets (%d bytes) sent as 102, %d packets (%d bytes) received as 103\n",
			r.PacketsSent, r.BytesSent, r.DataReceived, r.DataBytes)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeReasons(b *strings.Builder, what string, m map[string]int) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(b, "  %s: %s: %d\n", what, k, m[k])
	}
}
