package main

import (
	"testing"
	"time"
)

func TestBackoffDoublesToCap(t *testing.T) {
	b := newBackoff()
	b.random = func() float64 { return 0.5 } // no jitter
	want := []time.Duration{
		250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second,
		4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second,
	}
	for i, w := range want {
		if got := b.Next(); got != w {
			t.Fatalf("wait %d = %v, want %v", i, got, w)
		}
	}
	b.Reset()
	if got := b.Next(); got != backoffMin {
		t.Fatalf("wait after Reset = %v, want %v", got, backoffMin)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	tests := []struct {
		name     string
		random   float64
		attempts int
		want     time.Duration
	}{
		{"lowest first", 0, 1, 200 * time.Millisecond},
		{"highest first", 0.999999999, 1, 300 * time.Millisecond},
		{"lowest at cap", 0, 10, 8 * time.Second},
		{"highest at cap never exceeds it", 0.999999999, 10, 10 * time.Second},
	}
	for _, tt := range tests {
		b := newBackoff()
		b.random = func() float64 { return tt.random }
		var got time.Duration
		for range tt.attempts {
			got = b.Next()
		}
		if diff := got - tt.want; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("%s: wait = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBackoffRandomWaitsStayInBounds(t *testing.T) {
	b := newBackoff()
	base := backoffMin
	seen := map[bool]bool{}
	for range 1000 {
		got := b.Next()
		lo, hi := time.Duration(float64(base)*0.8), min(time.Duration(float64(base)*1.2), backoffMax)
		if got < lo || got > hi {
			t.Fatalf("wait %v outside [%v, %v] for base %v", got, lo, hi, base)
		}
		seen[got < base] = true
		base = min(2*base, backoffMax)
	}
	if !seen[true] || !seen[false] {
		t.Error("1000 waits were all on one side of the base: no jitter")
	}
}
