package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// resolvedDNS sets the servers on the TUN link in systemd-resolved, with
// the routing domain "~." so that the link is used for all names. The
// settings belong to the link: when the client dies and the kernel removes
// its TUN, resolved forgets them, so there is nothing to restore after a
// crash.
type resolvedDNS struct {
	tun     string
	run     commandRunner
	log     *slog.Logger
	applied bool
}

func newResolvedDNS(tun string, run commandRunner, log *slog.Logger) *resolvedDNS {
	return &resolvedDNS{tun: tun, run: run, log: log}
}

func (r *resolvedDNS) Name() string { return "systemd-resolved link " + r.tun }

// Apply runs every time, even with the same servers: a TUN created anew
// after a device failure is a new link that resolved knows nothing about.
func (r *resolvedDNS) Apply(servers [3]netip.Addr) error {
	list := usableServers(servers)
	if len(list) == 0 {
		return nil
	}
	args := []string{"dns", r.tun}
	for _, s := range list {
		args = append(args, s.String())
	}
	// Set first: a half-applied link is still reverted on exit.
	r.applied = true
	if err := r.run.run(nil, "resolvectl", args...); err != nil {
		return fmt.Errorf("failed to set DNS servers on %s: %w", r.tun, err)
	}
	if err := r.run.run(nil, "resolvectl", "domain", r.tun, "~."); err != nil {
		return fmt.Errorf("failed to route all names to %s: %w", r.tun, err)
	}
	// Makes the link a default route for names no link claims; older
	// resolvectl (systemd < 240) lacks the verb, and "~." already
	// routes every name there.
	if err := r.run.run(nil, "resolvectl", "default-route", r.tun, "yes"); err != nil {
		r.log.Warn("failed to make the TUN a default DNS route (the ~. domain still routes all names to it)", slog.Any("err", err))
	}
	return nil
}

// Restore reverts the link's settings. A link that is gone (the TUN was
// closed after a failure) took them with it.
func (r *resolvedDNS) Restore() error {
	if !r.applied {
		return nil
	}
	err := r.run.run(nil, "resolvectl", "revert", r.tun)
	if err != nil && !linkExists(r.tun) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("failed to revert the DNS settings of %s: %w", r.tun, err)
	}
	r.applied = false
	return nil
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// resolvedInUse says why systemd-resolved cannot take the servers, or nil
// when it can: it runs (its runtime directory is there and resolvectl
// answers) and the host's lookups go through it (resolv.conf points at it
// or at its stub 127.0.0.53, or nsswitch asks it directly). A resolved
// that runs beside a resolv.conf it does not manage would take the servers
// and never be asked.
func resolvedInUse(env dnsEnv) error {
	if info, err := os.Stat(env.resolvedDir); err != nil || !info.IsDir() {
		return fmt.Errorf("no %s: systemd-resolved does not run", env.resolvedDir)
	}
	if !env.run.lookPath("resolvectl") {
		return errors.New("resolvectl is not in PATH")
	}
	if !lookupsUseResolved(env) {
		return fmt.Errorf("%s neither links to %s nor names 127.0.0.53, and %s has no resolve in its hosts line",
			env.resolvConf, env.resolvedDir, env.nsswitch)
	}
	if err := env.run.run(nil, "resolvectl", "--no-pager", "status"); err != nil {
		return fmt.Errorf("systemd-resolved does not answer: %w", err)
	}
	return nil
}

func lookupsUseResolved(env dnsEnv) bool {
	// A link to the stub file or to resolved's list of upstream servers
	// (which resolved rewrites with every link's servers).
	target, errT := filepath.EvalSymlinks(env.resolvConf)
	dir, errD := filepath.EvalSymlinks(env.resolvedDir)
	if errT == nil && errD == nil && filepath.Dir(target) == dir {
		return true
	}
	if b, err := os.ReadFile(env.resolvConf); err == nil && bytes.Contains(b, []byte("nameserver 127.0.0.53")) {
		return true
	}
	b, err := os.ReadFile(env.nsswitch)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "hosts:" && slices.Contains(f[1:], "resolve") {
			return true
		}
	}
	return false
}
