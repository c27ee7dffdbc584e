package main

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestRunRejectsBadFlagsWithExit2(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-mtu", "9000"}, "-mtu"},
		{[]string{"-pool", "2001:db8::/64"}, "-pool"},
		{[]string{"-pool", "192.0.2.0/31"}, "-pool"},
		{[]string{"-dns", "198.51.100.1,nope"}, "-dns"},
		{[]string{"-dns", "198.51.100.1,198.51.100.2,198.51.100.3,198.51.100.4"}, "-dns"},
		{[]string{"-route", "::"}, "-route"},
		{[]string{"-log-level", "loud"}, "-log-level"},
		{[]string{"-log-format", "xml"}, "-log-format"},
		{[]string{"-timeout", "10s", "-heartbeat", "20s"}, "-timeout"},
		{[]string{"-tun", "a-very-long-device-name"}, "-tun"},
		{[]string{"-max-sessions", "-1"}, "-max-sessions"},
		{[]string{"-nosuchflag"}, "nosuchflag"},
		{[]string{"-max-per-source", "-2"}, "-max-per-source"},
		{[]string{"-debug-faults", "-admin", "[::]:9604"}, "-debug-faults"},
		{[]string{"-debug-faults", "-admin", "off"}, "-debug-faults"},
		{[]string{"extra"}, "extra"},
		{[]string{"-admin", "127.0.0.1:0"}, "-admin"},
		{[]string{"-admin", "127.0.0.1"}, "-admin"},
		{[]string{"-admin", "127.0.0.1:nosuchservice"}, "-admin"},
		{[]string{"-rate-limit", "fast"}, "-rate-limit"},
		{[]string{"-rate-limit", "-8mbit"}, "-rate-limit"},
		{[]string{"-rate-limit", ""}, "-rate-limit"},
		{[]string{"-rate-limit", "8"}, "forget the unit"},
		{[]string{"-rate-limit", "7999bit"}, "-rate-limit"},
		{[]string{"-rate-limit", "2000gbit"}, "-rate-limit"},
		{[]string{"-tun-queues", "0"}, "-tun-queues 0 out of range 1-64"},
		{[]string{"-tun-queues", "65"}, "-tun-queues 65 out of range 1-64"},
		{[]string{"-tun-queues", "-1"}, "-tun-queues"},
		{[]string{"-tun-queues", "many"}, "-tun-queues"},
		{[]string{"-node", "n1"}, "need -etcd"},
		{[]string{"-etcd", "http://[2001:db8::10]:2379"}, "-node-addr is needed"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tc.args, io.Discard, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("run = %d, stderr %q; want 2 and a message naming %s", code, stderr.String(), tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	o, err := parseOptions(nil, io.Discard, filepath.Join(t.TempDir(), "missing"))
	if err != nil {
		t.Fatal(err)
	}
	fallback := netip.MustParseAddr("8.8.8.8")
	if o.listen != "[::]:5678" || o.pool.String() != "100.64.0.0/24" || o.tun != "4over6" || o.mtu != 1500 ||
		o.route != netip.IPv4Unspecified() || o.nat != "auto" || o.heartbeat != 20*time.Second ||
		o.timeout != 60*time.Second || o.handshakeTimeout != 10*time.Second || o.maxSessions != 0 ||
		o.dns != [3]netip.Addr{fallback, fallback, fallback} || o.log.JSON || o.maxPerSource != 16 ||
		!o.clientToClient || o.debugFaults || o.admin != "127.0.0.1:9604" || o.grace != 5*time.Minute || o.queue != 1024 || !o.offload ||
		o.rateLimit != 0 || o.tunQueues != min(runtime.GOMAXPROCS(0), 8) {
		t.Fatalf("defaults = %+v", o)
	}
}

func TestTUNQueuesFlag(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"-tun-queues", "1"}, 1},
		{[]string{"-tun-queues", "4"}, 4},
		{[]string{"-tun-queues", "64"}, 64},
	}
	for _, tc := range tests {
		o, err := parseOptions(tc.args, io.Discard, filepath.Join(t.TempDir(), "missing"))
		if err != nil {
			t.Errorf("parseOptions(%q): %v", tc.args, err)
		} else if o.tunQueues != tc.want {
			t.Errorf("parseOptions(%q): %d TUN queues, want %d", tc.args, o.tunQueues, tc.want)
		}
	}
}

// TestAdminPort checks the port the nftables table closes to the TUN.
func TestAdminPort(t *testing.T) {
	token := writeTokenFile(t, testToken, 0o600)
	tests := []struct {
		args []string
		want uint16
	}{
		{nil, 9604},
		{[]string{"-admin", "0.0.0.0:9700", "-admin-token-file", token}, 9700},
		{[]string{"-admin", "[::]:8080", "-admin-token-file", token}, 8080},
		{[]string{"-admin", "off"}, 0},
	}
	for _, tc := range tests {
		o, err := parseOptions(tc.args, io.Discard, filepath.Join(t.TempDir(), "missing"))
		if err != nil {
			t.Errorf("parseOptions(%q): %v", tc.args, err)
		} else if o.adminPort != tc.want {
			t.Errorf("parseOptions(%q): admin port %d, want %d", tc.args, o.adminPort, tc.want)
		}
	}
}

func TestRateLimit(t *testing.T) {
	tests := []struct {
		value string
		want  uint64
	}{
		{"0", 0},
		{"8mbit", 8_000_000},
		{"500kbit", 500_000},
		{"8kbit", 8_000},
		{"1.5gbit", 1_500_000_000},
		{"2mbps", 16_000_000},
	}
	for _, tc := range tests {
		o, err := parseOptions([]string{"-rate-limit", tc.value}, io.Discard, filepath.Join(t.TempDir(), "missing"))
		if err != nil {
			t.Errorf("-rate-limit %s: %v", tc.value, err)
		} else if o.rateLimit != tc.want {
			t.Errorf("-rate-limit %s: %d bit/s, want %d", tc.value, o.rateLimit, tc.want)
		} else if cfg := engineConfig(o, nil, nil, nil); cfg.RateLimit != tc.want {
			t.Errorf("-rate-limit %s: engine gets %d bit/s, want %d", tc.value, cfg.RateLimit, tc.want)
		}
	}
}

func TestDNSFromResolvConf(t *testing.T) {
	tests := []struct {
		name, conf string
		want       string
	}{
		{"three of four", "nameserver 198.51.100.1\nnameserver 2001:db8::53\nnameserver 198.51.100.2\n# c\nnameserver 198.51.100.3\nnameserver 198.51.100.4\n", "198.51.100.1 198.51.100.2 198.51.100.3"},
		{"one padded", "search example\nnameserver 203.0.113.9\n", "203.0.113.9 203.0.113.9 203.0.113.9"},
		{"two padded", "nameserver 203.0.113.9\nnameserver 203.0.113.8\n", "203.0.113.9 203.0.113.8 203.0.113.9"},
		{"only IPv6 falls back", "nameserver 2001:db8::53\n", "8.8.8.8 8.8.8.8 8.8.8.8"},
		{"loopback stub skipped", "nameserver 127.0.0.53\nnameserver 198.51.100.5\n", "198.51.100.5 198.51.100.5 198.51.100.5"},
		{"link-local and unspecified skipped", "nameserver 169.254.169.254\nnameserver 0.0.0.0\nnameserver 203.0.113.7\n", "203.0.113.7 203.0.113.7 203.0.113.7"},
		{"only Docker's loopback falls back", "nameserver 127.0.0.11\noptions ndots:0\n", "8.8.8.8 8.8.8.8 8.8.8.8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(path, []byte(tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			o, err := parseOptions(nil, io.Discard, path)
			if err != nil {
				t.Fatal(err)
			}
			if got := o.dns[0].String() + " " + o.dns[1].String() + " " + o.dns[2].String(); got != tc.want {
				t.Fatalf("dns = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDNSFlagPadding(t *testing.T) {
	o, err := parseOptions([]string{"-dns", "198.51.100.7, 198.51.100.8"}, io.Discard, "")
	if err != nil {
		t.Fatal(err)
	}
	want := [3]netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8"), netip.MustParseAddr("198.51.100.7")}
	if o.dns != want {
		t.Fatalf("dns = %v, want %v", o.dns, want)
	}
}

// On a host whose /etc/resolv.conf names only a local stub, clients get
// the upstream servers systemd-resolved lists, and the note says why; with
// nothing usable anywhere, the fallback and a note naming what was skipped.
func TestDNSSkipsResolversClientsCannotUse(t *testing.T) {
	tests := []struct {
		name, stub, upstream string
		want                 string
		note                 []string // all must appear; none means no note
	}{
		{"usable first file", "nameserver 198.51.100.1\n", "nameserver 203.0.113.1\n", "198.51.100.1", nil},
		{"stub then upstream", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lab\n", "nameserver 203.0.113.1\nnameserver 203.0.113.2\n",
			"203.0.113.1 203.0.113.2 203.0.113.1", []string{"127.0.0.53", "203.0.113.1", "upstream"}},
		{"stub, no upstream file", "nameserver 127.0.0.53\n", "", "8.8.8.8 8.8.8.8 8.8.8.8", []string{"127.0.0.53", "set -dns"}},
		{"stub, upstream only loopback", "nameserver 127.0.0.53\n", "nameserver 127.0.0.1\n", "8.8.8.8 8.8.8.8 8.8.8.8", []string{"127.0.0.53", "127.0.0.1"}},
		{"nothing at all", "", "", "8.8.8.8 8.8.8.8 8.8.8.8", []string{"no IPv4 nameserver"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			stub, upstream := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "upstream")
			for path, text := range map[string]string{stub: tc.stub, upstream: tc.upstream} {
				if text == "" {
					continue
				}
				if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var dns [3]netip.Addr
			note, err := parseDNS("", []string{stub, upstream}, &dns)
			if err != nil {
				t.Fatal(err)
			}
			got := dns[0].String() + " " + dns[1].String() + " " + dns[2].String()
			if want := tc.want; len(strings.Fields(want)) == 1 {
				tc.want = want + " " + want + " " + want
			}
			if got != tc.want {
				t.Fatalf("dns = %s, want %s", got, tc.want)
			}
			if len(tc.note) == 0 && note != "" {
				t.Fatalf("unexpected note %q", note)
			}
			for _, w := range tc.note {
				if !strings.Contains(note, w) {
					t.Fatalf("note %q does not mention %q", note, w)
				}
			}
		})
	}
}

// TestPolicyFlags checks -allow and -source-prefix: what they parse to,
// their defaults and the values refused.
func TestPolicyFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		allow   string // fmt of the parsed list
		prefix  int
		wantErr string
	}{
		{"defaults", nil, "[]", 128, ""},
		{"one prefix", []string{"-allow", "2001:db8:1::/64"}, "[2001:db8:1::/64]", 128, ""},
		{"list with spaces, masked", []string{"-allow", "2001:db8:1::5/64, 2001:db8:2::/48"}, "[2001:db8:1::/64 2001:db8:2::/48]", 128, ""},
		{"bare address", []string{"-allow", "2001:db8:1::11"}, "[2001:db8:1::11/128]", 128, ""},
		{"IPv4 for dual-stack clients", []string{"-allow", "203.0.113.0/24"}, "[203.0.113.0/24]", 128, ""},
		{"empty is everyone", []string{"-allow", ""}, "[]", 128, ""},
		{"source /64", []string{"-source-prefix", "64"}, "[]", 64, ""},
		{"source /1", []string{"-source-prefix", "1"}, "[]", 1, ""},
		{"not a prefix", []string{"-allow", "2001:db8:1::/64,nope"}, "", 0, "-allow"},
		{"empty item", []string{"-allow", "2001:db8:1::/64,"}, "", 0, "-allow"},
		{"bits too long", []string{"-allow", "2001:db8::/129"}, "", 0, "-allow"},
		{"zone", []string{"-allow", "fe80::1%eth0"}, "", 0, "-allow"},
		{"source 0", []string{"-source-prefix", "0"}, "", 0, "-source-prefix"},
		{"source 129", []string{"-source-prefix", "129"}, "", 0, "-source-prefix"},
		{"source negative", []string{"-source-prefix", "-64"}, "", 0, "-source-prefix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.args, io.Discard, filepath.Join(t.TempDir(), "missing"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseOptions(%q) = %v, want an error naming %s", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseOptions(%q): %v", tc.args, err)
			}
			if got := fmt.Sprint(o.allow); got != tc.allow || o.sourcePrefix != tc.prefix {
				t.Fatalf("allow %s, source prefix %d; want %s, %d", got, o.sourcePrefix, tc.allow, tc.prefix)
			}
			cfg := engineConfig(o, nil, nil, nil)
			if fmt.Sprint(cfg.Allow) != tc.allow || cfg.SourcePrefix != tc.prefix {
				t.Fatalf("engine config allow %v, source prefix %d: not passed on", cfg.Allow, cfg.SourcePrefix)
			}
		})
	}
}

func TestReservationsFlag(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "reservations.json")
	tests := []struct {
		name    string
		args    []string
		want    string // o.reservations; "" with wantErr
		wantErr bool
	}{
		{"off by default", nil, "", false},
		{"a file", []string{"-reservations", file}, file, false},
		{"beside a lease file", []string{"-reservations", file, "-lease-file", filepath.Join(dir, "leases.json")}, file, false},
		{"the lease file itself", []string{"-reservations", file, "-lease-file", dir + "/./reservations.json"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.args, io.Discard, filepath.Join(dir, "missing"))
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "-reservations") {
					t.Fatalf("err = %v, want one naming -reservations", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.reservations != tc.want {
				t.Fatalf("reservations = %q, want %q", o.reservations, tc.want)
			}
			if got := engineConfig(o, nil, nil, nil).ReservationsFile; got != tc.want {
				t.Fatalf("engine config has ReservationsFile %q, want %q", got, tc.want)
			}
		})
	}
}
