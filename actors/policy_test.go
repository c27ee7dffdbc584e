package actors

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/tuntest"
)

func TestSourceOf(t *testing.T) {
	tests := []struct {
		addr string
		bits int
		want string
	}{
		{"2001:db8:1::11", 128, "2001:db8:1::11/128"},
		{"2001:db8:1::11", 0, "2001:db8:1::11/128"}, // 0 means 128
		{"2001:db8:1::11", 200, "2001:db8:1::11/128"},
		{"2001:db8:1::11", 64, "2001:db8:1::/64"},
		{"2001:db8:1:0:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1::/64"},
		{"2001:db8:1:ffff::1", 48, "2001:db8:1::/48"},
		{"2001:db8:1::11", 1, "::/1"},
		{"fe80::1%eth0", 64, "fe80::/64"},            // zone dropped
		{"::ffff:203.0.113.7", 64, "203.0.113.7/32"}, // an IPv4 client of a dual-stack listener: per address
		{"::ffff:203.0.113.7", 128, "203.0.113.7/32"},
		{"203.0.113.7", 64, "203.0.113.7/32"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%d", tc.addr, tc.bits), func(t *testing.T) {
			if got := sourceOf(netip.MustParseAddr(tc.addr), tc.bits); got.String() != tc.want {
				t.Fatalf("sourceOf = %v, want %s", got, tc.want)
			}
		})
	}
	if got := sourceOf(netip.Addr{}, 64); got.IsValid() {
		t.Fatalf("sourceOf(zero) = %v, want the zero prefix", got)
	}
	// The two addresses of one /64 are one source only under /64.
	a, b := netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::12")
	if sourceOf(a, 64) != sourceOf(b, 64) || sourceOf(a, 128) == sourceOf(b, 128) {
		t.Fatal("sources of one /64 compare wrongly")
	}
}

func TestAllowedBy(t *testing.T) {
	lab := normalizeAllow([]netip.Prefix{
		netip.MustParsePrefix("2001:db8:1::/64"),
		netip.MustParsePrefix("2001:db8:2::11/128"),
		netip.MustParsePrefix("::ffff:203.0.113.0/120"), // written mapped: means 203.0.113.0/24
	})
	tests := []struct {
		name  string
		allow []netip.Prefix
		addr  string
		want  bool
	}{
		{"empty list allows all", nil, "2001:db8:9::1", true},
		{"empty list allows IPv4 too", nil, "::ffff:198.51.100.1", true},
		{"inside the /64", lab, "2001:db8:1::99", true},
		{"the one address", lab, "2001:db8:2::11", true},
		{"next to the one address", lab, "2001:db8:2::12", false},
		{"outside", lab, "2001:db8:3::1", false},
		{"zone ignored", lab, "2001:db8:1::5%eth0", true},
		{"mapped client in the IPv4 prefix", lab, "::ffff:203.0.113.9", true},
		{"plain IPv4 client in the IPv4 prefix", lab, "203.0.113.9", true},
		{"mapped client outside", lab, "::ffff:198.51.100.9", false},
		{"IPv6-only list refuses IPv4 clients", lab[:2], "::ffff:203.0.113.9", false},
		{"IPv6 ::/0 does not take IPv4 clients", []netip.Prefix{netip.MustParsePrefix("::/0")}, "::ffff:203.0.113.9", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := allowedBy(tc.allow, netip.MustParseAddr(tc.addr)); got != tc.want {
				t.Fatalf("allowedBy(%v, %s) = %v, want %v", tc.allow, tc.addr, got, tc.want)
			}
		})
	}
}

func TestNormalizeAllow(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("2001:db8:1::5/64"),
		netip.MustParsePrefix("::ffff:203.0.113.0/120"),
		netip.MustParsePrefix("::ffff:0:0/96"), // every IPv4 client
		netip.MustParsePrefix("::ffff:0:0/80"), // wider than the mapped range: an IPv6 prefix, masked
		{},
	}
	got := fmt.Sprint(normalizeAllow(in))
	if want := "[2001:db8:1::/64 203.0.113.0/24 0.0.0.0/0 ::/80 invalid Prefix]"; got != want {
		t.Fatalf("normalizeAllow = %s, want %s", got, want)
	}
	if normalizeAllow(nil) != nil {
		t.Fatal("normalizeAllow(nil) is not nil")
	}
}

func TestConfigValidatesPolicy(t *testing.T) {
	base := Config{Listener: &net.TCPListener{}, Device: tuntest.New("cfg0", 1500), Pool: testPool, DNS: testDNS}
	tests := []struct {
		name  string
		tweak func(*Config)
		ok    bool
	}{
		{"defaults", func(*Config) {}, true},
		{"source 64", func(c *Config) { c.SourcePrefix = 64 }, true},
		{"source 129", func(c *Config) { c.SourcePrefix = 129 }, false},
		{"source negative", func(c *Config) { c.SourcePrefix = -1 }, false},
		{"invalid allow", func(c *Config) { c.Allow = []netip.Prefix{{}} }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.tweak(&c)
			c = c.withDefaults()
			if err := c.validate(); (err == nil) != tc.ok {
				t.Fatalf("validate = %v, want ok %v", err, tc.ok)
			}
			if tc.ok && c.SourcePrefix == 0 {
				t.Fatal("source prefix 0 not defaulted")
			}
		})
	}
}

func TestBanList(t *testing.T) {
	src := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	a, b, c := src("2001:db8:1::/64"), src("2001:db8:2::/64"), src("2001:db8:3::/64")
	tests := []struct {
		name  string
		steps func(t *testing.T, l *banList)
	}{
		{"banned until it expires, then removed", func(t *testing.T, l *banList) {
			if _, err := l.add(a, t0.Add(time.Minute), t0); err != nil {
				t.Fatal(err)
			}
			if until, ok := l.banned(a, t0.Add(59*time.Second)); !ok || !until.Equal(t0.Add(time.Minute)) {
				t.Fatalf("banned before expiry = %v, %v", until, ok)
			}
			if _, ok := l.banned(b, t0); ok {
				t.Fatal("another source is banned")
			}
			if _, ok := l.banned(a, t0.Add(time.Minute)); ok {
				t.Fatal("still banned at the end of the ban")
			}
			if l.len() != 0 {
				t.Fatalf("expired ban kept: %d entries", l.len())
			}
		}},
		{"a later ban extends, an earlier one does not shorten", func(t *testing.T, l *banList) {
			mustAdd(t, l, a, t0.Add(time.Hour), t0)
			if until := mustAdd(t, l, a, t0.Add(time.Minute), t0); !until.Equal(t0.Add(time.Hour)) {
				t.Fatalf("shorter ban changed the end to %v", until)
			}
			if until := mustAdd(t, l, a, t0.Add(2*time.Hour), t0); !until.Equal(t0.Add(2 * time.Hour)) {
				t.Fatalf("longer ban ends %v", until)
			}
		}},
		{"full table refuses, pruning makes room", func(t *testing.T, l *banList) {
			mustAdd(t, l, a, t0.Add(time.Minute), t0)
			mustAdd(t, l, b, t0.Add(time.Hour), t0)
			if _, err := l.add(c, t0.Add(time.Hour), t0.Add(time.Second)); !errors.Is(err, ErrTooManyBans) {
				t.Fatalf("third ban in a table of two: %v, want ErrTooManyBans", err)
			}
			if _, ok := l.banned(c, t0.Add(time.Second)); ok {
				t.Fatal("a refused ban was applied")
			}
			mustAdd(t, l, a, t0.Add(3*time.Minute), t0.Add(2*time.Second)) // re-banning a banned source needs no room
			// a's ban ends at 3m: at 4m it is pruned to make room for c.
			mustAdd(t, l, c, t0.Add(time.Hour), t0.Add(4*time.Minute))
			if l.len() != 2 {
				t.Fatalf("table holds %d bans, want b and c", l.len())
			}
		}},
		{"prune removes only ended bans", func(t *testing.T, l *banList) {
			mustAdd(t, l, a, t0.Add(time.Minute), t0)
			mustAdd(t, l, b, t0.Add(time.Hour), t0)
			l.prune(t0.Add(time.Minute))
			if _, ok := l.banned(b, t0.Add(time.Minute)); !ok || l.len() != 1 {
				t.Fatalf("after prune: %d bans, b banned %v", l.len(), ok)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.steps(t, newBanList(2)) })
	}
}

func mustAdd(t *testing.T, l *banList, src netip.Prefix, until, now time.Time) time.Time {
	t.Helper()
	got, err := l.add(src, until, now)
	if err != nil {
		t.Fatalf("add %v: %v", src, err)
	}
	return got
}

// Grace stickiness follows -source-prefix: under /64 a client that comes
// back from another address of its /64 (a new privacy address) gets its
// old address back; under /128 it is a stranger.
func TestAllocatorGraceKeyFollowsSourcePrefix(t *testing.T) {
	pool := netip.MustParsePrefix("192.0.2.0/29")
	first, again := netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::12")
	for _, tc := range []struct {
		bits     int
		sameAddr bool
	}{{64, true}, {128, false}, {0, false}} {
		t.Run(fmt.Sprint(tc.bits), func(t *testing.T) {
			a := newAllocator(pool, time.Minute)
			a.sourceBits = tc.bits
			x, _ := a.allocate("s1", first, t0)
			a.release("s1", first, t0)
			y, _ := a.allocate("s2", again, t0.Add(time.Second))
			if (x == y) != tc.sameAddr {
				t.Fatalf("first got %v, the other address of its /64 then %v; want same %v", x, y, tc.sameAddr)
			}
			// Taken, a reservation leaves no trace; not taken, it stays
			// indexed under first's source.
			if want := map[bool]int{true: 0, false: 1}[tc.sameAddr]; len(a.byClient) != want || len(a.reserved) != want {
				t.Fatalf("reservations %v, index %v; want %d each", a.reserved, a.byClient, want)
			}
		})
	}
}
