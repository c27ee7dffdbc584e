package actors

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gather reads every sample of m through a pedantic registry (which also
// checks that Describe and Collect agree), keyed by name{label=value}; a
// histogram gives name_count, name_sum and name_bucket{le=BOUND}.
func gather(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(m))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			name := f.GetName()
			for _, l := range s.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case s.GetGauge() != nil:
				got[name] = s.GetGauge().GetValue()
			case s.GetCounter() != nil:
				got[name] = s.GetCounter().GetValue()
			case s.GetHistogram() != nil:
				h := s.GetHistogram()
				got[name+"_count"], got[name+"_sum"] = float64(h.GetSampleCount()), h.GetSampleSum()
				for _, b := range h.GetBucket() {
					got[fmt.Sprintf("%s_bucket{le=%g}", name, b.GetUpperBound())] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return got
}

// TestCollectorExportsFleetMetrics reads the fleet's gauges, counters and
// etcd histogram, and its refuse and close reasons, by their exported
// names; on a single node they are there too, at zero.
func TestCollectorExportsFleetMetrics(t *testing.T) {
	fleet := &Metrics{}
	fleet.FleetBlocks.Store(3)
	fleet.FleetClaims.Store(2)
	fleet.FleetState.Store(1)
	fleet.FleetRenewFailures.Add(4)
	fleet.EtcdRTT(700 * time.Microsecond)
	fleet.EtcdRTT(30 * time.Millisecond)
	fleet.Refuse(RefuseFleetUnavailable)
	fleet.Closed(CloseMoved)
	fleet.Closed(CloseMoved)
	fleet.Closed(CloseFleetLost)
	tests := []struct {
		name string
		m    *Metrics
		want map[string]float64
	}{
		{"fleet node", fleet, map[string]float64{
			"fourover6d_fleet_blocks": 3, "fourover6d_fleet_claims": 2, "fourover6d_fleet_state": 1,
			"fourover6d_fleet_lease_renew_failures_total":   4,
			"fourover6d_etcd_rtt_seconds_count":             2,
			"fourover6d_etcd_rtt_seconds_bucket{le=0.0005}": 0, "fourover6d_etcd_rtt_seconds_bucket{le=0.001}": 1,
			"fourover6d_etcd_rtt_seconds_bucket{le=0.025}": 1, "fourover6d_etcd_rtt_seconds_bucket{le=0.05}": 2,
			"fourover6d_etcd_rtt_seconds_bucket{le=5}":                       2,
			"fourover6d_connections_refused_total{reason=fleet_unavailable}": 1,
			"fourover6d_sessions_closed_by_reason_total{reason=moved}":       2,
			"fourover6d_sessions_closed_by_reason_total{reason=fleet_lost}":  1,
		}},
		{"single node", &Metrics{}, map[string]float64{
			"fourover6d_fleet_blocks": 0, "fourover6d_fleet_claims": 0, "fourover6d_fleet_state": 0,
			"fourover6d_fleet_lease_renew_failures_total": 0, "fourover6d_etcd_rtt_seconds_count": 0,
			"fourover6d_connections_refused_total{reason=fleet_unavailable}": 0,
			"fourover6d_sessions_closed_by_reason_total{reason=moved}":       0,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := gather(t, tc.m)
			for name, want := range tc.want {
				if v, ok := got[name]; !ok || v != want {
					t.Errorf("%s = %v (exported %v), want %v", name, v, ok, want)
				}
			}
		})
	}
	if sum := gather(t, fleet)["fourover6d_etcd_rtt_seconds_sum"]; sum < 0.0306 || sum > 0.0308 {
		t.Errorf("etcd_rtt_seconds sum %v, want 0.0307", sum)
	}
}
