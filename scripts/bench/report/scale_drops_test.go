package main

import (
	"strings"
	"testing"
)

// The account names every non-zero drop counter on its side of the path,
// with its meaning, and the remainders that no counter explains.
func TestDropAccount(t *testing.T) {
	a := activeRun{PPS: 2000, Seconds: 10, Sink: sinkReport{Packets: 900, Echoed: 900}}
	a.Load.PacketsSent, a.Load.DataReceived = 1100, 760
	a.Settled = &settledCounts{
		PacketsIn: 1000, PacketsOut: 780,
		TUN:        tunStats{RxPackets: 1000, TxPackets: 800, TxDropped: 102, TxQLen: 500},
		Drops:      map[string]float64{"session_ended": 15, "queue_full": 5, "no_route": 0, "spoofed": 2},
		SinkRcvbuf: 60, SinkNoPort: 40, ReaderWaits: 3, ReaderWaitS: 0.002,
	}
	got := dropAccount(a)
	for _, want := range []string{
		"the server forwarded 1000 of them to the TUN, 2 dropped as `spoofed`",
		"the other 98 were left in the connections",
		"the TUN took 1000 (0 dropped by the device; 0 not accounted for)",
		"60 were dropped by the sink's kernel", "40 arrived after it had closed its socket", "0 not accounted for.",
		"routed 902 into the TUN (+2:", "dropped 102 of them", "`txqueuelen` 500",
		"the bound was the reader itself",
		"780 went to the sessions' connections, 5 dropped as `queue_full`", "15 dropped as `session_ended`",
		"; 0 not counted by the server (", "the sessions received 760 (the other 20",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("account lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "no_route") {
		t.Errorf("account names a zero counter:\n%s", got)
	}
	a.Settled.ReaderWaitS = 2
	if got := dropAccount(a); !strings.Contains(got, "the Router was the bound") {
		t.Errorf("a reader waiting 20%% of the run does not name the Router:\n%s", got)
	}
	a.Settled.TUN.TxDropped, a.Sink.Echoed = 0, 800
	if got := dropAccount(a); !strings.Contains(got, "dropped none of them") || strings.Contains(got, "TUN queue") {
		t.Errorf("no TX drops, yet a full queue is named:\n%s", got)
	}
}
