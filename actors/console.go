package actors

import (
	"errors"
	"net/netip"
	"time"
)

// Errors of the operator console's calls (Server.Kick, Reserve,
// Unreserve). The admin endpoint maps them to HTTP statuses, so they are
// sentinels to test with errors.Is; the wrapped error says the details.
var (
	// ErrNoSession: no session holds the address (404).
	ErrNoSession = errors.New("no session holds that address")
	// ErrBadReservation: the reservation can never be valid: an address
	// outside the pool, the server's own, or of the wrong family (400).
	ErrBadReservation = errors.New("invalid reservation")
	// ErrReservationConflict: valid, but it collides with another
	// client's reservation or a session holding the address (409).
	ErrReservationConflict = errors.New("reservation conflict")
	// ErrNoReservation: nothing is reserved for that client (404).
	ErrNoReservation = errors.New("no reservation for that client")
)

// KickResult says whom a kick closed, so the caller can log and show it.
type KickResult struct {
	// Client is the kicked session's client address and port.
	Client netip.AddrPort
	// BannedUntil is when the ban of the client's source ends; zero when
	// the kick carried no ban.
	BannedUntil time.Time
}

// PoolStats is the pool's occupancy, for the console and the dashboard.
type PoolStats struct {
	// Size is how many addresses can be leased at all.
	Size int
	// Leased are held by sessions now.
	Leased int
	// Reserved are set aside by static reservations (leased or not).
	Reserved int
	// Free could be leased to a client without a reservation now:
	// Size minus the leased ones minus the reserved ones not leased.
	Free int
}
