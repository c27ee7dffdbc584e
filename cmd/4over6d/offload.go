package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/4over6d/4over6d/tun"
)

// offloadCollector exposes the TUN's offload counters, so an operator can
// tell whether the kernel really hands over and accepts 64 KiB packets
// (the difference between one system call per packet and one per ~45).
type offloadCollector struct {
	enabled                     bool
	stats                       func() tun.OffloadStats
	on, packets, segs, malforms *prometheus.Desc
	udpPackets, udpSegs         *prometheus.Desc
}

func newOffloadCollector(enabled bool, stats func() tun.OffloadStats) *offloadCollector {
	return &offloadCollector{
		enabled:  enabled,
		stats:    stats,
		on:       prometheus.NewDesc("fourover6d_tun_offload_enabled", "1 if the TUN runs with checksum and TCP segmentation offload.", nil, nil),
		packets:  prometheus.NewDesc("fourover6d_tun_gso_packets_total", "GSO packets (TCP, and UDP where the kernel offers UDP segmentation) crossing the TUN, by direction (read: split for clients, write: merged from clients).", []string{"direction"}, nil),
		segs:     prometheus.NewDesc("fourover6d_tun_gso_segments_total", "Packets carried inside those GSO packets, by direction.", []string{"direction"}, nil),
		malforms: prometheus.NewDesc("fourover6d_tun_offload_malformed_total", "Packets from the kernel that could not be split or checksummed, dropped.", nil, nil),
		udpPackets: prometheus.NewDesc("fourover6d_tun_udp_gso_writes_total",
			"The part of the GSO writes that merged clients' UDP datagrams into one packet (UDP segmentation offload).", nil, nil),
		udpSegs: prometheus.NewDesc("fourover6d_tun_udp_gso_datagrams_total", "Client UDP datagrams merged into those writes.", nil, nil),
	}
}

// Describe sends every descriptor.
func (c *offloadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.on
	ch <- c.packets
	ch <- c.segs
	ch <- c.malforms
	ch <- c.udpPackets
	ch <- c.udpSegs
}

// Collect reads the device's counters.
func (c *offloadCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	on := 0.0
	if c.enabled {
		on = 1
	}
	ch <- prometheus.MustNewConstMetric(c.on, prometheus.GaugeValue, on)
	ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(s.GSOReads), "read")
	ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(s.GSOWrites), "write")
	ch <- prometheus.MustNewConstMetric(c.segs, prometheus.CounterValue, float64(s.SegmentsRead), "read")
	ch <- prometheus.MustNewConstMetric(c.segs, prometheus.CounterValue, float64(s.SegmentsWritten), "write")
	ch <- prometheus.MustNewConstMetric(c.malforms, prometheus.CounterValue, float64(s.Malformed))
	ch <- prometheus.MustNewConstMetric(c.udpPackets, prometheus.CounterValue, float64(s.UDPGSOWrites))
	ch <- prometheus.MustNewConstMetric(c.udpSegs, prometheus.CounterValue, float64(s.UDPSegmentsWritten))
}

// sumOffloadStats adds up the counters of every TUN queue: each queue has
// its own, and /metrics shows the interface's.
func sumOffloadStats(queues []*tun.Linux) tun.OffloadStats {
	var sum tun.OffloadStats
	for _, q := range queues {
		s := q.OffloadStats()
		sum.GSOReads += s.GSOReads
		sum.SegmentsRead += s.SegmentsRead
		sum.GSOWrites += s.GSOWrites
		sum.SegmentsWritten += s.SegmentsWritten
		sum.Malformed += s.Malformed
		sum.UDPGSOWrites += s.UDPGSOWrites
		sum.UDPSegmentsWritten += s.UDPSegmentsWritten
	}
	return sum
}
