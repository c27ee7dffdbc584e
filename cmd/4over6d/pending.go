package main

import (
	"net/http"
	"net/netip"
	"time"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/messages"
)

// pendingConsole is the running engine with the console calls it does not
// have yet: branches policy (Kick) and static (Reservations, Reserve,
// Unreserve, Pool) add them to *actors.Server. Until then the API answers
// them with 501. Removed at merge: main.go then passes the server itself,
// and the assertion beside the console interface is enabled.
type pendingConsole struct{ *actors.Server }

var _ engine = pendingConsole{}

// notBuilt answers 501 for a call this build lacks.
func notBuilt(call string) error {
	return &apiError{http.StatusNotImplemented, call + ": not available in this build of the engine"}
}

// Kick is pending (branch policy).
func (pendingConsole) Kick(netip.Addr, time.Duration) (actors.KickResult, error) {
	return actors.KickResult{}, notBuilt("kick")
}

// Reservations is pending (branch static).
func (pendingConsole) Reservations() ([]messages.Static, error) {
	return nil, notBuilt("reservations")
}

// Reserve is pending (branch static).
func (pendingConsole) Reserve(messages.Static) error { return notBuilt("reserve") }

// Unreserve is pending (branch static).
func (pendingConsole) Unreserve(netip.Addr) error { return notBuilt("unreserve") }

// Pool is pending (branch static).
func (pendingConsole) Pool() (actors.PoolStats, error) { return actors.PoolStats{}, notBuilt("pool") }
