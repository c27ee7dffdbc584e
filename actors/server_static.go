package actors

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/4over6d/4over6d/messages"
)

// The operator console's static reservations, on Server. The AddressPool
// owns them (see pool_static.go); these methods only ask it.
//
// A reserved address is never leased to anyone else, also when the pool
// is otherwise full. Its client gets it whenever it connects and the
// address is free; a client that already has a session with another
// address keeps that one, and the reservation applies at its next lease.

// Reservations lists the static reservations, sorted by client address.
func (s *Server) Reservations() ([]messages.Static, error) {
	res, err := s.ask(s.cfg.pool, &staticsQuery{})
	if err != nil {
		return nil, err
	}
	return res.(*staticsAnswer).statics, nil
}

// Reserve adds or replaces the reservation of r.Client and, with a
// reservations file, returns once the file holds it. errors.Is(err,
// ErrBadReservation) for a reservation that can never be valid (an
// address outside the pool, its network or broadcast address, the
// server's own, a client that is not a plain IPv6 address);
// ErrReservationConflict when r.Addr is reserved for another client or
// leased now to another client's session. Any other error is a failure to
// save the file: the reservation is in effect nonetheless. In a fleet
// the change is the fleet's, made in etcd (ErrFleetUnavailable when that
// cannot be done now: nothing changed); a query that timed out may still
// land.
func (s *Server) Reserve(r messages.Static) error {
	res, err := s.ask(s.cfg.pool, &reserveRequest{static: r})
	if err != nil {
		return err
	}
	return res.(*consoleReply).err
}

// Unreserve removes client's reservation (ErrNoReservation when there is
// none). A session holding the address keeps it; once it ends, the
// address is an ordinary one again.
func (s *Server) Unreserve(client netip.Addr) error {
	res, err := s.ask(s.cfg.pool, &unreserveRequest{client: client})
	if err != nil {
		return err
	}
	return res.(*consoleReply).err
}

// Pool reports the pool's occupancy.
func (s *Server) Pool() (PoolStats, error) {
	res, err := s.ask(s.cfg.pool, &poolStatsQuery{})
	if err != nil {
		return PoolStats{}, err
	}
	return res.(PoolStats), nil
}

// ReloadReservations reads the reservations file again (SIGHUP) and makes
// its entries the set: a bad entry is logged and skipped and the rest
// applied, a reservation the file no longer has is removed, and an entry
// whose address is leased now to another client is skipped (see the
// AddressPool's log). A file that cannot be read or parsed as a whole is
// an error, and the current set stays. The file is not rewritten: skipped
// entries stay in it until the next Reserve or Unreserve writes the set
// in effect. Without a reservations file it does nothing.
func (s *Server) ReloadReservations() error {
	path := s.cfg.ReservationsFile
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to reload reservations, keeping the current ones: %w", err)
	}
	good, bad, err := parseReservations(data, s.cfg.Pool)
	if err != nil {
		return fmt.Errorf("failed to reload reservations from %s, keeping the current ones: %w", path, err)
	}
	for _, e := range bad {
		s.cfg.Metrics.ReservationsRejected.Add(1)
		s.cfg.Logger.Warn("reservations reload: skipping entry", slog.String("file", path), slog.Any("err", e))
	}
	if _, err := s.ask(s.cfg.pool, &staticsReload{statics: good, skipped: len(bad)}); err != nil {
		return fmt.Errorf("failed to reload reservations: %w", err)
	}
	return nil
}

// loadStatics reads the reservations file at Start; see
// loadReservationsFile for why anything wrong in it is an error.
func loadStatics(cfg Config) ([]messages.Static, error) {
	if cfg.ReservationsFile == "" {
		return nil, nil
	}
	statics, err := loadReservationsFile(cfg.ReservationsFile, cfg.Pool)
	if err != nil {
		return nil, err
	}
	// A missing file is created by the first Reserve, in this directory:
	// find out now, not then, that it cannot be.
	if dir := filepath.Dir(cfg.ReservationsFile); !isDir(dir) {
		return nil, fmt.Errorf("reservations file %s: directory %s does not exist", cfg.ReservationsFile, dir)
	}
	cfg.Logger.Info("loaded reservations file", slog.String("file", cfg.ReservationsFile), slog.Int("reservations", len(statics)))
	return statics, nil
}

func isDir(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}
