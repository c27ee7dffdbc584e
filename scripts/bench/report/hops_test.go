package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// pingTrace writes one ping's events in perf script's format, each hop
// taking the µs given, and a line of another process between each.
func pingTrace(start float64, hops []float64) string {
	type ev struct{ comm, pid, text string }
	evs := []ev{
		{"ping", "900", "raw_syscalls:sys_enter: NR 44 (3, 0, 40, 0, 0, 10)"},
		{"4over6c", "200", "raw_syscalls:sys_exit: NR 281 = 1"},
		{"4over6c", "200", "raw_syscalls:sys_enter: NR 1 (5, 0, 59, 0, 0, 0)"},
		{"4over6c", "200", "raw_syscalls:sys_exit: NR 1 = 89"},
		{"4over6d", "100", "raw_syscalls:sys_exit: NR 281 = 1"},
		{"4over6d", "100", "raw_syscalls:sys_enter: NR 20 (9, 0, 2, 0, 0, 0)"},
		{"4over6d", "100", "raw_syscalls:sys_exit: NR 20 = 94"},
		{"4over6d", "100", "raw_syscalls:sys_enter: NR 1 (e, 0, 59, 0, 0, 0)"},
		{"4over6d", "100", "raw_syscalls:sys_exit: NR 1 = 89"},
		{"4over6c", "200", "raw_syscalls:sys_exit: NR 281 = 1"},
		{"4over6c", "200", "raw_syscalls:sys_enter: NR 20 (d, 0, 2, 0, 0, 0)"},
		{"4over6c", "200", "raw_syscalls:sys_exit: NR 20 = 94"},
		{"ping", "900", "raw_syscalls:sys_exit: NR 47 = 84"},
	}
	var b strings.Builder
	t := start
	for i, e := range evs {
		if i > 0 {
			t += hops[i-1] / 1e6
		}
		fmt.Fprintf(&b, "%16s %5s/%s [000] %.6f: %s\n", e.comm, e.pid, e.pid, t, e.text)
		fmt.Fprintf(&b, "%16s %5s/%s [001] %.6f: raw_syscalls:sys_enter: NR 1 (1, 0, 1, 0, 0, 0)\n", "other", "7", "7", t)
	}
	return b.String()
}

func TestHopsMediansPerHop(t *testing.T) {
	hops := []float64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120}
	slow := append([]float64(nil), hops...)
	slow[4] = 500 // one ping slow in the server's uplink: not the median
	for _, tc := range []struct {
		name     string
		trace    string
		want     []string
		wantFail bool
	}{
		{name: "three pings", trace: pingTrace(1, hops) + pingTrace(2, slow) + pingTrace(3, hops),
			want: []string{"3 pings", `TUN actor\)\s+50\n`, `ping woken\s+120\n`, `reply\)\s+780\n`}},
		{name: "an unanswered ping is skipped", trace: pingTrace(1, hops) + strings.SplitAfter(pingTrace(2, hops), "\n")[0],
			want: []string{"1 pings"}},
		{name: "no ping", trace: "", wantFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runHops([]string{"-server", "100", "-client", "200"}, strings.NewReader(tc.trace), &out)
			if tc.wantFail {
				if err == nil {
					t.Fatalf("no error; printed %s", out.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !regexp.MustCompile(w).MatchString(out.String()) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
