package actors

import (
	"testing"
	"time"
)

func TestPlanTick(t *testing.T) {
	const (
		hb      = 20 * time.Second
		timeout = 60 * time.Second
		s       = time.Second
	)
	tests := []struct {
		name                 string
		now, heard, nextBeat time.Duration
		want                 tickPlan
	}{
		{"heartbeat due, client fresh", 100 * s, 95 * s, 100 * s,
			tickPlan{beat: true, nextBeat: 120 * s, due: 120 * s}},
		{"heartbeat due, fired late by the grid", 100*s + 50*time.Millisecond, 95 * s, 100 * s,
			tickPlan{beat: true, nextBeat: 120 * s, due: 120 * s}}, // steps of hb from the lease: no drift
		{"late by more than a period: no catch-up", 150 * s, 149 * s, 100 * s,
			tickPlan{beat: true, nextBeat: 170 * s, due: 170 * s}},
		{"early tick (a stale handshake timer): nothing due", 90 * s, 89 * s, 100 * s,
			tickPlan{nextBeat: 100 * s, due: 100 * s}},
		{"quiet client: the silence deadline comes first", 100 * s, 50 * s, 100 * s,
			tickPlan{beat: true, nextBeat: 120 * s, due: 110 * s}},
		{"silence deadline reached, no heartbeat due", 110 * s, 50 * s, 120 * s,
			tickPlan{silent: true}},
		{"silence deadline reached with a heartbeat due: close, no beat", 120 * s, 60 * s, 120 * s,
			tickPlan{silent: true}},
		{"just under the timeout", 110*s - 1, 50 * s, 120 * s,
			tickPlan{nextBeat: 120 * s, due: 110 * s}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := planTick(tt.now, tt.heard, tt.nextBeat, hb, timeout); got != tt.want {
				t.Fatalf("planTick(now %v, heard %v, next beat %v) = %+v, want %+v", tt.now, tt.heard, tt.nextBeat, got, tt.want)
			}
		})
	}
}

func TestTimerGrid(t *testing.T) {
	tests := []struct {
		heartbeat, want time.Duration
	}{
		{20 * time.Second, maxTimerGrid},
		{time.Second, time.Second / 64},
		{40 * time.Millisecond, time.Millisecond},
		{time.Millisecond, time.Millisecond},
	}
	for _, tt := range tests {
		if got := timerGrid(tt.heartbeat); got != tt.want {
			t.Errorf("timerGrid(%v) = %v, want %v", tt.heartbeat, got, tt.want)
		}
	}
}

func TestOnGrid(t *testing.T) {
	const g = 100 * time.Millisecond
	tests := []struct {
		t, want time.Duration
	}{
		{0, 0},
		{1, g},
		{g - 1, g},
		{g, g},
		{g + 1, 2 * g},
		{7*time.Second + 250*time.Millisecond, 7*time.Second + 300*time.Millisecond},
	}
	for _, tt := range tests {
		if got := onGrid(tt.t, g); got != tt.want {
			t.Errorf("onGrid(%v, %v) = %v, want %v", tt.t, g, got, tt.want)
		}
	}
}
