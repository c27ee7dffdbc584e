package actors

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// rateUnits are the suffixes tc(8) and most VPN front-ends use for rates,
// so an operator can write what they already know: bits per second with
// decimal multipliers (kbit = 1000 bit/s), and the byte forms (kbps =
// 8000 bit/s, as tc means it).
var rateUnits = []struct {
	suffix string
	mult   uint64
}{
	{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
	{"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8},
}

// MaxRate bounds a rate limit: above it a token bucket in bytes per second
// would not fit the arithmetic, and no link this server runs on is faster.
const MaxRate = 1e12

// ParseRate reads a rate such as "8mbit", "500kbit", "1.5gbit" or "0"
// (off) into bit/s. A bare number is bit/s. Case is ignored.
func ParseRate(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, errors.New("empty rate (want e.g. 8mbit, 500kbit or 0 for off)")
	}
	num, mult := t, uint64(1)
	for _, u := range rateUnits {
		if strings.HasSuffix(t, u.suffix) {
			num, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("invalid rate %q (want e.g. 8mbit, 500kbit, 1gbit or 0 for off)", s)
	}
	bits := v * float64(mult)
	if bits > MaxRate {
		return 0, fmt.Errorf("rate %q is above the largest supported, 1000gbit", s)
	}
	if bits > 0 && bits < 8 {
		return 0, fmt.Errorf("rate %q is below 8 bit/s (one byte a second)", s)
	}
	return uint64(math.Round(bits)), nil
}

// FormatRate writes bit/s back in the largest unit that keeps it exact,
// so that ParseRate(FormatRate(r)) == r and files stay readable.
func FormatRate(bits uint64) string {
	if bits == 0 {
		return "0"
	}
	for _, u := range rateUnits[:4] {
		if bits%u.mult == 0 {
			return strconv.FormatUint(bits/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(bits, 10) + "bit"
}
