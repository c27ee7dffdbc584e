package actors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/tun"
)

// The reservations file (-reservations) holds the operator's static
// addresses, one fixed IPv4 address per client IPv6 address:
//
//	{"reservations": [{"client": "2001:db8::11", "addr": "192.0.2.50", "rate": "20mbit"}]}
//
// ("rate" optional, in ParseRate's syntax). Start reads it and refuses a
// bad file; a reload (SIGHUP) skips bad entries and applies the rest. The
// AddressPool rewrites it atomically after every Reserve and Unreserve.

// reservationsDoc is the file's shape. Entries are decoded one by one, so
// an error names the entry it is in.
type reservationsDoc struct {
	Reservations []json.RawMessage `json:"reservations"`
}

// reservationEntry is one entry as written: strings, so that every
// mistake gets a message in the operator's terms.
type reservationEntry struct {
	Client string `json:"client"`
	Addr   string `json:"addr"`
	Rate   string `json:"rate,omitempty"`
}

// checkStatic refuses a reservation that can never be valid in pool: a
// client that is not a plain IPv6 address, or an address that cannot be
// leased (outside the pool, its network, broadcast or the server's own),
// or a rate out of range. The error wraps ErrBadReservation.
func checkStatic(pool netip.Prefix, r messages.Static) error {
	if msg := staticProblem(pool, r); msg != "" {
		return fmt.Errorf("%w: %s", ErrBadReservation, msg)
	}
	return nil
}

func staticProblem(pool netip.Prefix, r messages.Static) string {
	c, a := r.Client, r.Addr
	switch {
	case !c.IsValid():
		return "no client IPv6 address"
	case c.Is4():
		return fmt.Sprintf("client %v is an IPv4 address; clients connect over IPv6", c)
	case c.Is4In6():
		return fmt.Sprintf("client %v is an IPv4-mapped address; clients connect over IPv6", c)
	case c.Zone() != "":
		return fmt.Sprintf("client %v has a zone; give the address alone", c)
	case c.IsUnspecified() || c.IsMulticast():
		return fmt.Sprintf("client %v cannot be a client's address", c)
	case !a.IsValid():
		return "no IPv4 address"
	case !a.Is4():
		return fmt.Sprintf("address %v is not an IPv4 address", a)
	case !pool.Contains(a):
		return fmt.Sprintf("address %v is outside the pool %v", a, pool)
	case a == pool.Masked().Addr():
		return fmt.Sprintf("address %v is the pool's network address", a)
	case a == broadcast(pool):
		return fmt.Sprintf("address %v is the pool's broadcast address", a)
	case a == tun.ServerAddr(pool):
		return fmt.Sprintf("address %v is the server's own address", a)
	case r.Rate > MaxRate || (r.Rate > 0 && r.Rate < 8):
		return fmt.Sprintf("rate %d bit/s is out of range (8 bit/s to 1000gbit, or 0 for none)", r.Rate)
	}
	return ""
}

// parseReservations reads a reservations file's content. err is for a file
// that cannot be read as a whole (not JSON, unknown top-level fields,
// trailing data); bad lists the entries that were skipped, each naming
// its entry (1-based). An entry is bad when it is malformed, invalid for
// pool (checkStatic), or repeats an earlier entry's client or address:
// the first entry wins. Whitespace alone is an empty set.
func parseReservations(data []byte, pool netip.Prefix) (good []messages.Static, bad []error, err error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil, nil
	}
	var doc reservationsDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("not a reservations file (want {\"reservations\": [...]}): %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, errors.New("unexpected data after the reservations object")
	}
	byClient := make(map[netip.Addr]int)
	byAddr := make(map[netip.Addr]int)
	for i, raw := range doc.Reservations {
		n := i + 1
		r, err := parseEntry(raw, pool)
		if err == nil {
			err = duplicate(r, byClient, byAddr)
		}
		if err != nil {
			bad = append(bad, fmt.Errorf("entry %d: %w", n, err))
			continue
		}
		byClient[r.Client], byAddr[r.Addr] = n, n
		good = append(good, r)
	}
	return good, bad, nil
}

func parseEntry(raw json.RawMessage, pool netip.Prefix) (messages.Static, error) {
	var e reservationEntry
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return messages.Static{}, fmt.Errorf("%w: %w", ErrBadReservation, err)
	}
	var r messages.Static
	var err error
	if r.Client, err = netip.ParseAddr(e.Client); err != nil {
		return r, fmt.Errorf("%w: client %q is not an IPv6 address", ErrBadReservation, e.Client)
	}
	if r.Addr, err = netip.ParseAddr(e.Addr); err != nil {
		return r, fmt.Errorf("%w: client %v: addr %q is not an IPv4 address", ErrBadReservation, r.Client, e.Addr)
	}
	if e.Rate != "" {
		if r.Rate, err = ParseRate(e.Rate); err != nil {
			return r, fmt.Errorf("%w: client %v: %w", ErrBadReservation, r.Client, err)
		}
	}
	if err := checkStatic(pool, r); err != nil {
		return r, fmt.Errorf("client %v: %w", r.Client, err)
	}
	return r, nil
}

func duplicate(r messages.Static, byClient, byAddr map[netip.Addr]int) error {
	if first, dup := byClient[r.Client]; dup {
		return fmt.Errorf("%w: client %v already has a reservation in entry %d", ErrBadReservation, r.Client, first)
	}
	if first, dup := byAddr[r.Addr]; dup {
		return fmt.Errorf("%w: client %v: address %v is already reserved in entry %d", ErrBadReservation, r.Client, r.Addr, first)
	}
	return nil
}

// loadReservationsFile reads the file at start, where anything wrong is an
// error: the server must not run with reservations other than the ones
// the operator wrote. A missing file is an empty set (it is created by the
// first Reserve).
func loadReservationsFile(path string, pool netip.Prefix) ([]messages.Static, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read reservations file: %w", err)
	}
	good, bad, err := parseReservations(data, pool)
	if err != nil {
		return nil, fmt.Errorf("reservations file %s: %w", path, err)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("reservations file %s: %w", path, entryErrors(bad))
	}
	return good, nil
}

// entryErrors are the bad entries of one file, on one line (the binary
// prints a start error as one line).
type entryErrors []error

func (e entryErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e entryErrors) Unwrap() []error { return e }

// saveReservationsFile replaces the file atomically with rs, sorted by
// client so that the file diffs well.
func saveReservationsFile(path string, rs []messages.Static) error {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(x, y messages.Static) int { return x.Client.Compare(y.Client) })
	entries := make([]reservationEntry, len(rs))
	for i, r := range rs {
		entries[i] = reservationEntry{Client: r.Client.String(), Addr: r.Addr.String()}
		if r.Rate != 0 {
			entries[i].Rate = FormatRate(r.Rate)
		}
	}
	data, err := json.MarshalIndent(struct {
		Reservations []reservationEntry `json:"reservations"`
	}{entries}, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode reservations: %w", err)
	}
	return writeFileAtomic(path, append(data, '\n'), "reservations file")
}
