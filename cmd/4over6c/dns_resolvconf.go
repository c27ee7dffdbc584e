package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// resolvconfDNS hands the servers to resolvconf as the record of the TUN,
// which merges them with the other interfaces' records into resolv.conf.
// It speaks the subset that Debian's resolvconf, openresolv and
// systemd-resolved's resolvconf shim share: "-a RECORD" and "-d RECORD"
// first (Debian's reads only those two words), then openresolv's options:
// -m 0 (first place) and -x (exclusive: the tunnel's servers only, as the
// file backend writes them); -f on delete ignores a record that is
// already gone. The record name is on disk before it is added, so that
// -restore-dns deletes a record a killed client left.
type resolvconfDNS struct {
	record string
	key    string
	state  stateDir
	run    commandRunner
	log    *slog.Logger
	added  bool
}

// newResolvconfDNS deletes the record a killed client left, unless that
// client still runs.
func newResolvconfDNS(tun string, env dnsEnv, log *slog.Logger) (*resolvconfDNS, error) {
	order, _ := os.ReadFile(filepath.Join(env.resolvconfDir, "interface-order"))
	r := &resolvconfDNS{record: resolvconfRecord(tun, order), state: stateDir{env.stateDir}, run: env.run, log: log}
	r.key = resolvconfKey(r.record)
	st, _, ok, err := r.state.load(r.key)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return r, nil
	case ownerRunning(st.PID):
		return nil, fmt.Errorf("resolvconf record %s is managed by 4over6c pid %d: %w", r.record, st.PID, errOwnerRunning)
	}
	log.Warn("the last 4over6c did not exit cleanly: deleting its resolvconf record", slog.String("record", st.Record), slog.Int("pid", st.PID))
	if err := deleteResolvconfRecord(r.state, r.run, st.Record); err != nil {
		return nil, err
	}
	return r, nil
}

func resolvconfKey(record string) string { return stateResolvconf + ":" + record }

func (r *resolvconfDNS) Name() string { return "resolvconf record " + r.record }

// Apply adds (or replaces) the record every time: resolvconf keeps no
// more than one per name, and systemd's shim ties it to the link, which
// may be new.
func (r *resolvconfDNS) Apply(servers [3]netip.Addr) error {
	lines := resolvNameservers(servers)
	if len(lines) == 0 {
		return nil
	}
	if !r.added {
		if err := r.state.save(r.key, dnsState{Kind: stateResolvconf, PID: os.Getpid(), Record: r.record}, nil); err != nil {
			return err
		}
		r.added = true
	}
	if err := r.run.run(lines, "resolvconf", "-a", r.record, "-m", "0", "-x"); err != nil {
		return fmt.Errorf("failed to add resolvconf record %s: %w", r.record, err)
	}
	return nil
}

// Restore deletes the record.
func (r *resolvconfDNS) Restore() error {
	if !r.added {
		return nil
	}
	if err := deleteResolvconfRecord(r.state, r.run, r.record); err != nil {
		return err
	}
	r.added = false
	return nil
}

func deleteResolvconfRecord(dir stateDir, run commandRunner, record string) error {
	if err := run.run(nil, "resolvconf", "-d", record, "-f"); err != nil {
		return fmt.Errorf("failed to delete resolvconf record %s: %w", record, err)
	}
	return dir.remove(resolvconfKey(record))
}

// orderPrefix matches a line of Debian's interface-order that orders by
// a name prefix, such as "tun*".
var orderPrefix = regexp.MustCompile(`^([A-Za-z0-9-]+)\*$`)

// resolvconfRecord names the record TUN.4over6c: "interface.program" is
// the convention of Debian's resolvconf and openresolv, and systemd's shim
// takes the part before the dot as the link. Debian's resolvconf orders
// records by the patterns of /etc/resolvconf/interface-order, whose
// default puts "tun*" first after the loopback ones; a TUN named otherwise
// ("4over6c") would come last, after the LAN's servers. So, as wg-quick
// does, the record gets the first such prefix (other than "lo", which is
// for local caches) unless the TUN name already has it.
func resolvconfRecord(tun string, interfaceOrder []byte) string {
	record := tun + ".4over6c"
	for line := range strings.Lines(string(interfaceOrder)) {
		m := orderPrefix.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || m[1] == "lo" {
			continue
		}
		if strings.HasPrefix(tun, m[1]) {
			return record
		}
		return m[1] + "." + record
	}
	return record
}
