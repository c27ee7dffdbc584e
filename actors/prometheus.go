package actors

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes Metrics to Prometheus. It reads the atomics at scrape
// time, so the data path never touches a Prometheus type.
type Collector struct {
	m                                     *Metrics
	sessions, sessionsTotal, closedTotal  *prometheus.Desc
	poolSize, poolLeased, denials         *prometheus.Desc
	packets, bytes, drops, failures, errs *prometheus.Desc
	refused, closedBy, setup, frames      *prometheus.Desc
	icmpSent, icmpLimited                 *prometheus.Desc
	fragmented, fragments                 *prometheus.Desc
	poolReserved, reservationsRejected    *prometheus.Desc
	fleetBlocks, fleetClaims, fleetState  *prometheus.Desc
	fleetRenewFailures, etcdRTT           *prometheus.Desc
	tunReaderWaits, tunReaderWaitSeconds  *prometheus.Desc
}

// NewCollector describes every engine metric under the "fourover6d_" prefix.
func NewCollector(m *Metrics) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("fourover6d_"+name, help, labels, nil)
	}
	return &Collector{
		m:             m,
		sessions:      d("sessions", "Client sessions currently connected."),
		sessionsTotal: d("sessions_opened_total", "Client connections accepted."),
		closedTotal:   d("sessions_closed_total", "Client sessions ended."),
		poolSize:      d("pool_size", "Addresses the pool can lease."),
		poolLeased:    d("pool_leased", "Addresses currently leased."),
		denials:       d("lease_denials_total", "Clients refused an address (pool exhausted or session limit)."),
		packets:       d("packets_total", "IPv4 packets carried, by direction (in: client to TUN, out: TUN to client).", "direction"),
		bytes:         d("bytes_total", "IPv4 bytes carried, by direction.", "direction"),
		drops:         d("drops_total", "Packets dropped, by reason.", "reason"),
		failures:      d("actor_failures_total", "Supervised actor panics, by actor kind.", "actor"),
		errs:          d("frame_errors_total", "Protocol violations by clients, by kind.", "kind"),
		closedBy:      d("sessions_closed_by_reason_total", "Client sessions ended, by reason.", "reason"),
		setup:         d("session_setup_seconds", "Time from accepting a connection to queueing its 101 reply."),
		refused:       d("connections_refused_total", "Connections closed before becoming a session, by reason.", "reason"),
		frames:        d("frames_total", "Frames received from clients, by type (100, 102, 104, 200, unknown).", "type"),
		icmpSent:      d("icmp_sent_total", "ICMP errors sent to clients, by type (frag_needed: a DF packet above the TUN MTU).", "type"),
		icmpLimited:   d("icmp_rate_limited_total", "ICMP errors not sent because the session's rate limit was reached, by type.", "type"),
		fragmented:    d("fragmented_packets_total", "Client packets above the TUN MTU without DF, fragmented to fit it."),
		fragments:     d("fragments_created_total", "Fragments written to the TUN in place of those packets."),
		poolReserved:  d("pool_reserved", "Addresses set aside by static reservations (leased to their client or not)."),
		reservationsRejected: d("reservations_rejected_total",
			"Static reservations refused (invalid or conflicting) or skipped by a reload of the reservations file."),
		fleetBlocks: d("fleet_blocks", "Blocks of the pool this node holds in etcd (0 on a single node)."),
		fleetClaims: d("fleet_claims", "Single-address (/32) claims this node holds in etcd (0 on a single node)."),
		fleetState: d("fleet_state",
			"Fleet state: 0 ok, 1 read-only (etcd cannot be reached safely: new sessions are refused, existing ones keep running)."),
		fleetRenewFailures: d("fleet_lease_renew_failures_total", "Failed renewals of this node's etcd lease."),
		etcdRTT:            d("etcd_rtt_seconds", "Round-trip time of the fleet's etcd requests and lease renewals."),
		tunReaderWaits: d("tun_reader_waits_total",
			"Times the TUN reader had its 16 batches in flight to the Router and waited for one (the kernel's TUN queue fills meanwhile; its overflow is the device's TX drops)."),
		tunReaderWaitSeconds: d("tun_reader_wait_seconds_total", "Time the TUN reader spent in those waits."),
	}
}

// Describe sends every descriptor.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.sessionsTotal, c.closedTotal, c.poolSize, c.poolLeased,
		c.denials, c.packets, c.bytes, c.drops, c.failures, c.errs, c.refused, c.closedBy, c.setup, c.frames,
		c.icmpSent, c.icmpLimited, c.fragmented, c.fragments, c.poolReserved, c.reservationsRejected,
		c.fleetBlocks, c.fleetClaims, c.fleetState, c.fleetRenewFailures, c.etcdRTT, c.tunReaderWaits, c.tunReaderWaitSeconds} {
		ch <- d
	}
}

// Collect reads the counters.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	m := c.m
	gauge(c.sessions, float64(m.SessionsActive.Load()))
	counter(c.sessionsTotal, m.SessionsOpened.Load())
	counter(c.closedTotal, m.SessionsClosed.Load())
	gauge(c.poolSize, float64(m.PoolSize.Load()))
	gauge(c.poolLeased, float64(m.PoolLeased.Load()))
	counter(c.denials, m.LeaseDenials.Load())
	counter(c.packets, m.PacketsIn.Load(), "in")
	counter(c.packets, m.PacketsOut.Load(), "out")
	counter(c.bytes, m.BytesIn.Load(), "in")
	counter(c.bytes, m.BytesOut.Load(), "out")
	for r := range numDropReasons {
		counter(c.drops, m.Drops(r), r.String())
	}
	for k := range numActorKinds {
		counter(c.failures, m.Failures(k), k.String())
	}
	for r := range numCloseReasons {
		counter(c.closedBy, m.ClosedBy(r), r.String())
	}
	buckets, count, sum := m.SetupHistogram()
	ch <- prometheus.MustNewConstHistogram(c.setup, count, sum, buckets)
	for r := range numRefuseReasons {
		counter(c.refused, m.Refused(r), r.String())
	}
	for f := range numFrameErrors {
		counter(c.errs, m.FrameErrors(f), f.String())
	}
	for t := range numFrameTypes {
		counter(c.frames, m.Frames(t), t.String())
	}
	for k := range numICMPTypes {
		counter(c.icmpSent, m.ICMPSentOf(k), k.String())
		counter(c.icmpLimited, m.ICMPRateLimitedOf(k), k.String())
	}
	counter(c.fragmented, m.Fragmented.Load())
	counter(c.fragments, m.FragmentsCreated.Load())
	gauge(c.poolReserved, float64(m.PoolReserved.Load()))
	counter(c.reservationsRejected, m.ReservationsRejected.Load())
	gauge(c.fleetBlocks, float64(m.FleetBlocks.Load()))
	gauge(c.fleetClaims, float64(m.FleetClaims.Load()))
	gauge(c.fleetState, float64(m.FleetState.Load()))
	counter(c.fleetRenewFailures, m.FleetRenewFailures.Load())
	buckets, count, sum = m.EtcdRTTHistogram()
	ch <- prometheus.MustNewConstHistogram(c.etcdRTT, count, sum, buckets)
	counter(c.tunReaderWaits, m.TUNReaderWaits.Load())
	ch <- prometheus.MustNewConstMetric(c.tunReaderWaitSeconds, prometheus.CounterValue, float64(m.TUNReaderWaitNanos.Load())/1e9)
}
