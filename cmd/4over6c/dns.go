package main

// DNS from the server's 101 reply, applied to the host with -dns-apply.
// Three backends, picked once at start:
//
//  1. systemd-resolved: the servers are set on the TUN link itself
//     (resolvectl dns/domain/default-route), so they vanish with the link
//     even when the client is killed; reverted on exit.
//  2. resolvconf (Debian's or openresolv): a record for the TUN, added with
//     -a and deleted with -d on exit; the record name is kept on disk so
//     that -restore-dns can delete it after a crash.
//  3. a resolv.conf file rewritten in place: only the nameserver lines are
//     replaced, the original is saved on disk before the first write and
//     put back on exit, by the next start, or by -restore-dns.

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
)

// Values of -dns-apply that name a backend rather than a file.
const (
	dnsAuto       = "auto"
	dnsResolved   = "resolved"
	dnsResolvconf = "resolvconf"
)

// defaultDNSState is where the file and resolvconf backends keep what they
// need to undo their changes after a crash. /run is cleared at boot, like
// the TUN the changes belong to.
const defaultDNSState = "/run/4over6c"

// defaultResolvConf is the file the auto mode rewrites when neither
// systemd-resolved nor resolvconf is there.
const defaultResolvConf = "/etc/resolv.conf"

// dnsBackend puts the server's DNS servers into the host's resolver
// configuration and takes them out again.
type dnsBackend interface {
	// Apply makes servers the host's resolvers. It is called on every
	// attach (after the TUN exists), with the same servers after a plain
	// reconnect; a backend skips work that is already done.
	Apply(servers [3]netip.Addr) error
	// Restore undoes Apply; without a prior Apply it does nothing.
	Restore() error
	// Name says which backend this is, for the log.
	Name() string
}

// dnsEnv is the host as the backend choice sees it: the places and
// commands that tell which resolver setup runs. Tests point it at
// temporary files and fake commands.
type dnsEnv struct {
	resolvedDir   string // /run/systemd/resolve, created by a running resolved
	resolvConf    string // /etc/resolv.conf
	nsswitch      string // /etc/nsswitch.conf
	resolvconfDir string // /etc/resolvconf, Debian resolvconf's configuration
	stateDir      string // -dns-state
	run           commandRunner
}

func hostDNSEnv(stateDir string) dnsEnv {
	if stateDir == "" {
		stateDir = defaultDNSState
	}
	return dnsEnv{
		resolvedDir: "/run/systemd/resolve", resolvConf: defaultResolvConf, nsswitch: "/etc/nsswitch.conf",
		resolvconfDir: "/etc/resolvconf", stateDir: stateDir, run: execCommand,
	}
}

// newDNSBackend picks the backend -dns-apply asks for; nil means DNS is
// not applied. A backend that cannot start (a second client on the same
// file, an unreadable state directory) is logged and left out: the tunnel
// works without DNS.
func newDNSBackend(o *options, env dnsEnv, log *slog.Logger) dnsBackend {
	if o.dnsApply == "" {
		return nil
	}
	b, err := chooseDNSBackend(o.dnsApply, o.tun, env, log)
	if err != nil {
		log.Error("not applying the server's DNS servers", slog.String("dns_apply", o.dnsApply), slog.Any("err", err))
		return nil
	}
	log.Info("DNS backend", slog.String("backend", b.Name()), slog.String("dns_apply", o.dnsApply))
	return b
}

// chooseDNSBackend maps -dns-apply to a backend. auto tries
// systemd-resolved, then resolvconf, then rewrites /etc/resolv.conf;
// resolved and resolvconf insist on one; anything else is a file path.
func chooseDNSBackend(mode, tunName string, env dnsEnv, log *slog.Logger) (dnsBackend, error) {
	switch mode {
	case dnsResolved:
		return newResolvedDNS(tunName, env.run, log), nil
	case dnsResolvconf:
		return asBackend(newResolvconfDNS(tunName, env, log))
	case dnsAuto:
		why := resolvedInUse(env)
		if why == nil {
			return newResolvedDNS(tunName, env.run, log), nil
		}
		log.Info("not using systemd-resolved", slog.Any("why", why))
		if env.run.lookPath("resolvconf") {
			return asBackend(newResolvconfDNS(tunName, env, log))
		}
		return asBackend(newFileDNS(env.resolvConf, env.stateDir, log))
	}
	if sameFile(mode, env.resolvConf) && resolvedInUse(env) == nil {
		log.Warn("systemd-resolved manages this file: -dns-apply auto would set the DNS servers on the TUN link instead of replacing the file",
			slog.String("path", mode))
	}
	return asBackend(newFileDNS(mode, env.stateDir, log))
}

// asBackend keeps a failed constructor's nil pointer from becoming a
// non-nil interface.
func asBackend[B dnsBackend](b B, err error) (dnsBackend, error) {
	if err != nil {
		return nil, err
	}
	return b, nil
}

// resolvContent is base with its nameserver lines replaced by one line per
// distinct server, skipping 0.0.0.0 (the protocol's placeholder for an
// unset field); every other line (search, domain, options, sortlist,
// comments) stays where it was. The new nameserver lines take the place of
// the first old one, or follow the rest when base had none. It also
// returns how many servers it wrote.
func resolvContent(base []byte, servers [3]netip.Addr) ([]byte, int) {
	lines := resolvNameservers(servers)
	out := []byte(resolvHeader)
	placed := false
	for line := range strings.Lines(string(base)) {
		if isNameserverLine(line) {
			if !placed {
				out, placed = append(out, lines...), true
			}
			continue
		}
		if line == resolvHeader {
			continue
		}
		out = append(out, line...)
		if !strings.HasSuffix(line, "\n") {
			out = append(out, '\n')
		}
	}
	if !placed {
		out = append(out, lines...)
	}
	return out, bytes.Count(lines, []byte("\n"))
}

// resolvHeader opens the file we write, so that an operator who finds it
// knows who wrote it and how to undo it.
const resolvHeader = "# nameservers written by 4over6c from the tunnel server; restored on exit or by 4over6c -restore-dns\n"

// resolvNameservers renders the distinct usable servers as nameserver
// lines, the input of every backend.
func resolvNameservers(servers [3]netip.Addr) []byte {
	var out []byte
	for _, s := range usableServers(servers) {
		out = fmt.Appendf(out, "nameserver %s\n", s)
	}
	return out
}

// usableServers drops unset, unspecified and repeated servers, keeping the
// server's order.
func usableServers(servers [3]netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, s := range servers {
		if !s.IsValid() || s.IsUnspecified() || slices.Contains(out, s) {
			continue
		}
		out = append(out, s)
	}
	return out
}

func isNameserverLine(line string) bool {
	f := strings.Fields(line)
	return len(f) > 0 && f[0] == "nameserver"
}

// sameFile reports whether two paths name the same file, as far as their
// cleaned absolute forms tell.
func sameFile(a, b string) bool {
	a, errA := filepath.Abs(a)
	b, errB := filepath.Abs(b)
	return errA == nil && errB == nil && a == b
}
