package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/4over6d/4over6d/tun"
)

// Every offload counter reaches /metrics under its own name, the UDP
// segmentation ones included, so an operator can see them at work.
func TestOffloadCollectorExportsEveryCounter(t *testing.T) {
	stats := tun.OffloadStats{GSOReads: 1, SegmentsRead: 2, GSOWrites: 3, SegmentsWritten: 4, Malformed: 5,
		UDPGSOWrites: 6, UDPSegmentsWritten: 7}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newOffloadCollector(true, func() tun.OffloadStats { return stats }))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"fourover6d_tun_offload_enabled":                     1,
		"fourover6d_tun_gso_packets_total{direction=read}":   1,
		"fourover6d_tun_gso_segments_total{direction=read}":  2,
		"fourover6d_tun_gso_packets_total{direction=write}":  3,
		"fourover6d_tun_gso_segments_total{direction=write}": 4,
		"fourover6d_tun_offload_malformed_total":             5,
		"fourover6d_tun_udp_gso_writes_total":                6,
		"fourover6d_tun_udp_gso_datagrams_total":             7,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}
}
