package actors

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages"
)

func TestLeaseFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	grace := time.Minute
	recs := []leaseRecord{
		{Client: clientA, Addr: netip.MustParseAddr("192.0.2.10")},                           // active at save
		{Client: clientB, Addr: netip.MustParseAddr("192.0.2.11"), Until: t0.Add(time.Hour)}, // reserved
		{Client: clientC, Addr: netip.MustParseAddr("192.0.2.12"), Until: t0.Add(-time.Second)},
	}
	if err := saveLeaseFile(path, recs, t0); err != nil {
		t.Fatal(err)
	}
	got, err := loadLeaseFile(path, t0, grace)
	if err != nil {
		t.Fatal(err)
	}
	want := []messages.Reservation{
		{Client: clientA, Addr: netip.MustParseAddr("192.0.2.10"), Until: t0.Add(grace)},
		{Client: clientB, Addr: netip.MustParseAddr("192.0.2.11"), Until: t0.Add(time.Hour)},
	}
	if len(got) != len(want) {
		t.Fatalf("loaded %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Client != want[i].Client || got[i].Addr != want[i].Addr || !got[i].Until.Equal(want[i].Until) {
			t.Fatalf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if matches, _ := filepath.Glob(path + ".tmp-*"); len(matches) != 0 {
		t.Fatalf("temporary files left behind: %v", matches)
	}
}

func TestLeaseFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr bool
	}{
		{"missing file is a first start", "", false},
		{"garbage", "{not json", true},
		{"wrong version", `{"version": 99, "leases": []}`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := loadLeaseFile(path, t0, time.Minute); (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
		})
	}
}

func TestCorruptLeaseFileIsMovedAsideAndServerStarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	if err := os.WriteFile(path, []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { c.LeaseFile = path })
	h.connect()
	backups, _ := filepath.Glob(path + ".corrupt-*")
	if len(backups) != 1 {
		t.Fatalf("backups = %v, want one", backups)
	}
	if data, _ := os.ReadFile(backups[0]); string(data) != "{broken" {
		t.Fatalf("backup holds %q", data)
	}
}

func TestLeaseFileGivesReturningClientItsAddress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	seeded := netip.MustParseAddr("192.0.2.77")
	if err := saveLeaseFile(path, []leaseRecord{{Client: netip.IPv6Loopback(), Addr: seeded}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { c.LeaseFile = path })
	if got := h.connect().addr; got != seeded {
		t.Fatalf("returning client got %v, want %v from the lease file", got, seeded)
	}
}

func TestLeasesAreSavedOnShutdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	ln := newHarness(t, func(c *Config) { c.LeaseFile = path })
	addr := ln.connect().addr
	if err := ln.srv.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		t.Fatal(err)
	}
	if len(lf.Leases) != 1 || lf.Leases[0].Client != netip.IPv6Loopback() || lf.Leases[0].Addr != addr {
		t.Fatalf("lease file = %s; want ::1 -> %v", data, addr)
	}
}
