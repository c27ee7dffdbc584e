package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/cmd/internal/logflag"
)

func TestDefaults(t *testing.T) {
	o, err := parseOptions([]string{"-server", "[2001:db8::1]:5678"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseOptions: %v", err)
	}
	want := options{
		server: "[2001:db8::1]:5678", tun: "4over6c", mtu: 1500, routeMode: routeFromServer,
		heartbeat: 20 * time.Second, timeout: 60 * time.Second, offload: true, log: logflag.Options{Level: slog.LevelInfo},
	}
	if o.server != want.server || o.tun != want.tun || o.mtu != want.mtu || o.routeMode != want.routeMode ||
		o.routes != nil || o.dnsApply != "" || o.heartbeat != want.heartbeat || o.timeout != want.timeout ||
		o.offload != want.offload || o.log != want.log || o.dnsState != "/run/4over6c" || o.restoreDNS {
		t.Errorf("defaults = %+v, want %+v", *o, want)
	}
}

func TestFlagsParsed(t *testing.T) {
	args := []string{
		"-server", "vpn.example.net:5678", "-tun", "tun9", "-mtu", "1400", "-routes", "198.51.100.0/24, 203.0.113.7/32,192.0.2.9/24",
		"-dns-apply", "/tmp/resolv.conf", "-heartbeat", "1s", "-timeout", "3s", "-log-level", "debug", "-log-format", "json", "-offload=false",
	}
	o, err := parseOptions(args, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseOptions: %v", err)
	}
	wantRoutes := []netip.Prefix{
		netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("192.0.2.0/24"),
	}
	if o.tun != "tun9" || o.mtu != 1400 || o.routeMode != routeList || !slices.Equal(o.routes, wantRoutes) ||
		o.dnsApply != "/tmp/resolv.conf" || o.heartbeat != time.Second || o.timeout != 3*time.Second || o.offload ||
		o.log != (logflag.Options{Level: slog.LevelDebug, JSON: true}) {
		t.Errorf("options = %+v", *o)
	}
	if o, err := parseOptions([]string{"-server", "[::1]:1", "-routes", "none"}, &bytes.Buffer{}); err != nil || o.routeMode != routeNone {
		t.Errorf("-routes none: %+v, %v", o, err)
	}
	if o, err := parseOptions([]string{"-server", "[::1]:1", "-routes", "0.0.0.0/0"}, &bytes.Buffer{}); err != nil || !slices.Equal(o.routes, def1) {
		t.Errorf("-routes 0.0.0.0/0: %+v, %v; want it installed as %v", o, err, def1)
	}
}

// TestInvalidFlagsExit2 runs the command's entry point: every invalid
// command line exits 2 with one line that names the flag.
func TestInvalidFlagsExit2(t *testing.T) {
	server := []string{"-server", "[2001:db8::1]:5678"}
	tests := []struct {
		name string
		args []string
		flag string
	}{
		{"missing server", nil, "-server"},
		{"server without port", []string{"-server", "2001:db8::1"}, "-server"},
		{"server with bad port", []string{"-server", "[2001:db8::1]:http"}, "-server"},
		{"server port zero", []string{"-server", "[2001:db8::1]:0"}, "-server"},
		{"server over IPv4", []string{"-server", "198.51.100.1:5678"}, "-server"},
		{"server IPv4-mapped", []string{"-server", "[::ffff:198.51.100.1]:5678"}, "-server"},
		{"server list with an IPv4 entry", []string{"-server", "[2001:db8::1]:5678,198.51.100.1:5678"}, "-server"},
		{"server list with an empty entry", []string{"-server", "[2001:db8::1]:5678,"}, "-server"},
		{"server listed twice", []string{"-server", "[2001:db8::1]:5678,[2001:db8::1]:5678"}, "-server"},
		{"unknown flag", append(server, "-bogus"), "-bogus"},
		{"stray argument", append(server, "extra"), "extra"},
		{"mtu not a number", append(server, "-mtu", "big"), "-mtu"},
		{"mtu too small", append(server, "-mtu", "575"), "-mtu"},
		{"mtu too large", append(server, "-mtu", "1501"), "-mtu"},
		{"empty tun", append(server, "-tun", ""), "-tun"},
		{"long tun", append(server, "-tun", "abcdefghijklmnop"), "-tun"},
		{"route not a prefix", append(server, "-routes", "198.51.100.0/24,nope"), "-routes"},
		{"IPv6 route", append(server, "-routes", "2001:db8::/32"), "-routes"},
		{"empty routes", append(server, "-routes", ""), "-routes"},
		{"zero heartbeat", append(server, "-heartbeat", "0s"), "-heartbeat"},
		{"bad heartbeat", append(server, "-heartbeat", "soon"), "-heartbeat"},
		{"timeout not above heartbeat", append(server, "-heartbeat", "5s", "-timeout", "5s"), "-timeout"},
		{"dns-apply directory", append(server, "-dns-apply", "/etc/"), "-dns-apply"},
		{"empty dns-state", append(server, "-dns-state", ""), "-dns-state"},
		{"restore-dns with empty dns-state", []string{"-restore-dns", "-dns-state", ""}, "-dns-state"},
		{"restore-dns log level", []string{"-restore-dns", "-log-level", "loud"}, "-log-level"},
		{"log level", append(server, "-log-level", "loud"), "-log-level"},
		{"log format", append(server, "-log-format", "xml"), "-log-format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(tt.args, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2 (output %q)", code, stderr.String())
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, tt.flag) {
				t.Errorf("output %q: want one line naming %s", out, tt.flag)
			}
		})
	}
}

func TestHelpExits0WithUsage(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"-help"}, &stderr); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	for _, name := range []string{"-server", "-tun", "-mtu", "-routes", "-dns-apply", "-dns-state", "-restore-dns", "-heartbeat", "-timeout", "-log-level", "-log-format"} {
		if !strings.Contains(stderr.String(), name) {
			t.Errorf("usage lacks %s:\n%s", name, stderr.String())
		}
	}
}

func TestRestoreDNSNeedsNoServer(t *testing.T) {
	o, err := parseOptions([]string{"-restore-dns", "-dns-state", "/tmp/state"}, &bytes.Buffer{})
	if err != nil || !o.restoreDNS || o.dnsState != "/tmp/state" {
		t.Fatalf("parseOptions(-restore-dns) = %+v, %v; want restoreDNS with the state directory and no -server", o, err)
	}
}
