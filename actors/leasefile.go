package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/4over6d/4over6d/messages"
)

// The lease file lets clients keep their addresses across a server restart,
// like OpenVPN's ifconfig-pool-persist: it maps client IPv6 addresses to the
// IPv4 address each last held. It is written atomically (temporary file,
// fsync, rename), at most once per leaseSaveEvery while leases change and
// once more at shutdown.

const (
	leaseFileVersion = 1
	leaseSaveEvery   = time.Second
)

type leaseFile struct {
	Version int           `json:"version"`
	Saved   time.Time     `json:"saved"`
	Leases  []leaseRecord `json:"leases"`
}

// leaseRecord is one client's address. Active leases have no Until: on
// load they are reserved for a full grace period from the restart.
type leaseRecord struct {
	Client netip.Addr `json:"client"`
	Addr   netip.Addr `json:"addr"`
	Until  time.Time  `json:"until,omitzero"`
}

// loadLeaseFile returns the reservations a restarted server should honour.
// A missing file is not an error (first start).
func loadLeaseFile(path string, now time.Time, grace time.Duration) ([]messages.Reservation, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read lease file: %w", err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		return nil, fmt.Errorf("failed to parse lease file %s: %w", path, err)
	}
	if lf.Version != leaseFileVersion {
		return nil, fmt.Errorf("lease file %s has version %d, want %d", path, lf.Version, leaseFileVersion)
	}
	var out []messages.Reservation
	for _, r := range lf.Leases {
		until := r.Until
		if until.IsZero() {
			until = now.Add(grace)
		}
		if r.Client.IsValid() && r.Addr.Is4() && until.After(now) {
			out = append(out, messages.Reservation{Client: r.Client, Addr: r.Addr, Until: until})
		}
	}
	return out, nil
}

// quarantineLeaseFile moves an unreadable lease file aside, so the next save
// does not destroy what an operator may want to inspect or repair.
func quarantineLeaseFile(path string, now time.Time) (string, error) {
	backup := fmt.Sprintf("%s.corrupt-%s", path, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, backup); err != nil {
		return "", fmt.Errorf("failed to move the unreadable lease file aside: %w", err)
	}
	return backup, nil
}

// saveLeaseFile replaces the file atomically.
func saveLeaseFile(path string, recs []leaseRecord, now time.Time) error {
	data, err := json.MarshalIndent(leaseFile{Version: leaseFileVersion, Saved: now.UTC(), Leases: recs}, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode leases: %w", err)
	}
	return writeFileAtomic(path, append(data, '\n'), "lease file")
}

// writeFileAtomic replaces path with data so that a reader (or a crash at
// any moment) sees either the old file or the new one, never a mix: a
// temporary file in the same directory, fsync, rename, fsync of the
// directory. what names the file in errors.
func writeFileAtomic(path string, data []byte, what string) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to create temporary %s: %w", what, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to write %s: %w", what, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to sync %s: %w", what, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to close %s: %w", what, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("failed to replace %s: %w", what, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
