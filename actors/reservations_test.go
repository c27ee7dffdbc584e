package actors

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/4over6d/4over6d/messages"
)

var (
	staticX = netip.MustParseAddr("192.0.2.50")
	staticY = netip.MustParseAddr("192.0.2.51")
)

func TestReservationsFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reservations.json")
	in := []messages.Static{
		{Client: clientB, Addr: staticY},
		{Client: clientA, Addr: staticX, Rate: 20e6},
	}
	if err := saveReservationsFile(path, in); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Sorted by client, rate written as the operator would, omitted when 0.
	want := `{
  "reservations": [
    {
      "client": "2001:db8::a",
      "addr": "192.0.2.50",
      "rate": "20mbit"
    },
    {
      "client": "2001:db8::b",
      "addr": "192.0.2.51"
    }
  ]
}
`
	if string(data) != want {
		t.Fatalf("file =\n%s\nwant\n%s", data, want)
	}
	got, err := loadReservationsFile(path, testPool)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != in[1] || got[1] != in[0] {
		t.Fatalf("loaded %+v, want %+v sorted by client", got, in)
	}
	if matches, _ := filepath.Glob(path + ".tmp-*"); len(matches) != 0 {
		t.Fatalf("temporary files left behind: %v", matches)
	}
}

// The file is replaced by a rename, never rewritten in place: a reader (or
// a crash) sees the old file or the new one, never half of one.
func TestReservationsFileIsReplacedAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reservations.json")
	if err := saveReservationsFile(path, []messages.Static{{Client: clientA, Addr: staticX}}); err != nil {
		t.Fatal(err)
	}
	before := inode(t, path)
	old, err := os.Open(path) // a reader that opened the old file
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldData, _ := os.ReadFile(path)
	if err := saveReservationsFile(path, []messages.Static{{Client: clientB, Addr: staticY}}); err != nil {
		t.Fatal(err)
	}
	if inode(t, path) == before {
		t.Fatal("the file was rewritten in place, not replaced")
	}
	buf := make([]byte, 4096)
	n, _ := old.Read(buf)
	if string(buf[:n]) != string(oldData) {
		t.Fatalf("the old file's reader saw %q, want the old content whole", buf[:n])
	}
	got, err := loadReservationsFile(path, testPool)
	if err != nil || len(got) != 1 || got[0].Client != clientB {
		t.Fatalf("after the second save: %+v, %v", got, err)
	}
	// A save that cannot happen leaves the file as it was.
	if err := saveReservationsFile(filepath.Join(path, "not-a-dir", "x.json"), nil); err == nil {
		t.Fatal("saving into a missing directory succeeded")
	}
	if got, err := loadReservationsFile(path, testPool); err != nil || len(got) != 1 || got[0].Client != clientB {
		t.Fatalf("after a failed save: %+v, %v", got, err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Ino
}

// Every way a file can be wrong is an error at start that says where.
func TestReservationsFileErrors(t *testing.T) {
	entry := func(s string) string { return `{"reservations": [` + s + `]}` }
	good := `{"client": "2001:db8::a", "addr": "192.0.2.50"}`
	tests := []struct {
		name    string
		content string // "" with missing: no file at all
		missing bool
		want    []string // all in the error; none: no error
		entry   bool     // an entry's error: wraps ErrBadReservation
	}{
		{name: "missing file is an empty set", missing: true},
		{name: "empty file is an empty set", content: "\n"},
		{name: "no entries", content: `{"reservations": []}`},
		{name: "null entries", content: `{"reservations": null}`},
		{name: "garbage", content: "{not json", want: []string{"not a reservations file"}},
		{name: "array at the top", content: `[` + good + `]`, want: []string{"not a reservations file"}},
		{name: "unknown top-level field", content: `{"reservations": [], "version": 2}`, want: []string{"version"}},
		{name: "trailing data", content: entry(good) + `{}`, want: []string{"after the reservations object"}},
		{name: "unknown entry field", content: entry(`{"client": "2001:db8::a", "adr": "192.0.2.50"}`), want: []string{"entry 1", `"adr"`}, entry: true},
		{name: "entry not an object", content: entry(`"2001:db8::a"`), want: []string{"entry 1"}, entry: true},
		{name: "client not an address", content: entry(`{"client": "host.example", "addr": "192.0.2.50"}`), want: []string{"entry 1", "host.example"}, entry: true},
		{name: "IPv4 client", content: entry(`{"client": "198.51.100.7", "addr": "192.0.2.50"}`), want: []string{"entry 1", "IPv4 address"}, entry: true},
		{name: "IPv4-mapped client", content: entry(`{"client": "::ffff:198.51.100.7", "addr": "192.0.2.50"}`), want: []string{"IPv4-mapped"}, entry: true},
		{name: "client with a zone", content: entry(`{"client": "fe80::1%eth0", "addr": "192.0.2.50"}`), want: []string{"zone"}, entry: true},
		{name: "missing addr", content: entry(`{"client": "2001:db8::a"}`), want: []string{"entry 1", `addr ""`}, entry: true},
		{name: "IPv6 addr", content: entry(`{"client": "2001:db8::a", "addr": "2001:db8::50"}`), want: []string{"not an IPv4 address"}, entry: true},
		{name: "outside the pool", content: entry(`{"client": "2001:db8::a", "addr": "198.51.100.50"}`), want: []string{"outside the pool 192.0.2.0/24"}, entry: true},
		{name: "the network", content: entry(`{"client": "2001:db8::a", "addr": "192.0.2.0"}`), want: []string{"network address"}, entry: true},
		{name: "the broadcast", content: entry(`{"client": "2001:db8::a", "addr": "192.0.2.255"}`), want: []string{"broadcast address"}, entry: true},
		{name: "the server's own", content: entry(`{"client": "2001:db8::a", "addr": "192.0.2.1"}`), want: []string{"server's own"}, entry: true},
		{name: "bad rate", content: entry(`{"client": "2001:db8::a", "addr": "192.0.2.50", "rate": "fast"}`), want: []string{"entry 1", "fast"}, entry: true},
		{name: "duplicate address", content: entry(good + `, {"client": "2001:db8::b", "addr": "192.0.2.50"}`),
			want: []string{"entry 2", "192.0.2.50", "already reserved in entry 1"}, entry: true},
		{name: "duplicate client", content: entry(good + `, {"client": "2001:db8:0::a", "addr": "192.0.2.51"}`),
			want: []string{"entry 2", "2001:db8::a", "already has a reservation in entry 1"}, entry: true},
		{name: "every bad entry is named", content: entry(good + `, {"client": "x"}, {"client": "2001:db8::c", "addr": "192.0.2.1"}`),
			want: []string{"entry 2", "entry 3"}, entry: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "reservations.json")
			if !tc.missing {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := loadReservationsFile(path, testPool)
			if len(tc.want) == 0 {
				if err != nil || len(got) != 0 {
					t.Fatalf("load = %+v, %v; want an empty set", got, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("load = %+v, want an error", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line naming the file", err)
			}
			if errors.Is(err, ErrBadReservation) != tc.entry {
				t.Fatalf("errors.Is(%q, ErrBadReservation) = %v, want %v", err, !tc.entry, tc.entry)
			}
		})
	}
}

// A reload skips what is wrong and keeps the rest: the first of two
// entries for one address wins.
func TestParseReservationsSkipsBadEntries(t *testing.T) {
	content := `{"reservations": [
		{"client": "2001:db8::a", "addr": "192.0.2.50", "rate": "8mbit"},
		{"client": "2001:db8::b", "addr": "192.0.2.50"},
		{"client": "2001:db8::c", "addr": "10.0.0.1"},
		{"client": "2001:db8::b", "addr": "192.0.2.51"}
	]}`
	good, bad, err := parseReservations([]byte(content), testPool)
	if err != nil {
		t.Fatal(err)
	}
	want := []messages.Static{{Client: clientA, Addr: staticX, Rate: 8e6}, {Client: clientB, Addr: staticY}}
	if len(good) != 2 || good[0] != want[0] || good[1] != want[1] {
		t.Fatalf("good = %+v, want %+v", good, want)
	}
	if len(bad) != 2 || !strings.Contains(bad[0].Error(), "entry 2") || !strings.Contains(bad[1].Error(), "entry 3") {
		t.Fatalf("bad = %v, want entries 2 and 3", bad)
	}
}

func TestCheckStatic(t *testing.T) {
	ok := messages.Static{Client: clientA, Addr: staticX}
	tests := []struct {
		name string
		r    messages.Static
		want string // "" for valid
	}{
		{"valid", ok, ""},
		{"valid with rate", messages.Static{Client: clientA, Addr: staticX, Rate: MaxRate}, ""},
		{"loopback client", messages.Static{Client: netip.IPv6Loopback(), Addr: staticX}, ""},
		{"last host", messages.Static{Client: clientA, Addr: netip.MustParseAddr("192.0.2.254")}, ""},
		{"no client", messages.Static{Addr: staticX}, "no client"},
		{"unspecified client", messages.Static{Client: netip.IPv6Unspecified(), Addr: staticX}, "cannot be"},
		{"multicast client", messages.Static{Client: netip.MustParseAddr("ff02::1"), Addr: staticX}, "cannot be"},
		{"no addr", messages.Static{Client: clientA}, "no IPv4"},
		{"mapped addr", messages.Static{Client: clientA, Addr: netip.MustParseAddr("::ffff:192.0.2.50")}, "not an IPv4"},
		{"rate too high", messages.Static{Client: clientA, Addr: staticX, Rate: MaxRate + 1}, "rate"},
		{"rate too low", messages.Static{Client: clientA, Addr: staticX, Rate: 7}, "rate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkStatic(testPool, tc.r)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if !errors.Is(err, ErrBadReservation) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadReservation mentioning %q", err, tc.want)
			}
		})
	}
}
