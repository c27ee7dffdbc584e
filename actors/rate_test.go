package actors

import "testing"

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		bad  bool
	}{
		{in: "0", want: 0},
		{in: "8mbit", want: 8_000_000},
		{in: "8Mbit", want: 8_000_000},
		{in: "500kbit", want: 500_000},
		{in: "1.5gbit", want: 1_500_000_000},
		{in: "20mbit", want: 20_000_000},
		{in: "100bit", want: 100},
		{in: "64000", want: 64_000},
		{in: "1mbps", want: 8_000_000},
		{in: "10kbps", want: 80_000},
		{in: " 2mbit ", want: 2_000_000},
		{in: "", bad: true},
		{in: "fast", bad: true},
		{in: "-1mbit", bad: true},
		{in: "mbit", bad: true},
		{in: "NaN", bad: true},
		{in: "Inf", bad: true},
		{in: "2000gbit", bad: true},
		{in: "4bit", bad: true},
		{in: "8 mbit", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		switch {
		case tt.bad && err == nil:
			t.Errorf("ParseRate(%q) = %d, want an error", tt.in, got)
		case !tt.bad && err != nil:
			t.Errorf("ParseRate(%q): %v", tt.in, err)
		case !tt.bad && got != tt.want:
			t.Errorf("ParseRate(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestFormatRateRoundTrips(t *testing.T) {
	tests := []struct {
		bits uint64
		want string
	}{
		{0, "0"}, {8_000_000, "8mbit"}, {500_000, "500kbit"}, {1_500_000_000, "1500mbit"},
		{2_000_000_000, "2gbit"}, {1234, "1234bit"}, {8, "8bit"},
	}
	for _, tt := range tests {
		got := FormatRate(tt.bits)
		if got != tt.want {
			t.Errorf("FormatRate(%d) = %q, want %q", tt.bits, got, tt.want)
		}
		back, err := ParseRate(got)
		if err != nil || back != tt.bits {
			t.Errorf("ParseRate(FormatRate(%d)) = %d, %v", tt.bits, back, err)
		}
	}
}
