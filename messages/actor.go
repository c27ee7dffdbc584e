// Package messages is the vocabulary of the server's actors: the plain
// structs they exchange (leases, routes, batches of packets, health checks)
// and the budgets that bound what is in flight between them. The wire
// format they carry is package wire, beside it.
package messages

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// LeaseRequest asks the AddressPool for an address for one session. Client
// is the session's IPv6 peer, so a client that reconnects from the same
// address within the grace period gets its previous IPv4 address back.
type LeaseRequest struct {
	Session *actor.PID
	Client  netip.AddrPort
	// Inbox bounds the batches the Router may have queued for the
	// session (see RouteAdd).
	Inbox Budget
}

// LeaseGranted answers a LeaseRequest. The pool has already told the
// Router, so packets for Addr reach the session from now on.
type LeaseGranted struct {
	Addr netip.Addr
	// Rate is the client's rate limit in bit/s from its static
	// reservation; 0 means the server's -rate-limit.
	Rate uint64
}

// LeaseDenied answers a LeaseRequest that cannot be served; the session
// closes its connection with Reason in the log.
type LeaseDenied struct {
	Reason string
	// Fleet is set when the node could not reach etcd safely
	// (fleet_unavailable), as opposed to a full pool.
	Fleet bool
}

// LeaseClaim restates a live session's lease to a pool that restarted and
// lost its table, so leases survive a pool crash.
type LeaseClaim struct {
	Session *actor.PID
	Client  netip.AddrPort
	Addr    netip.Addr
	Inbox   Budget
}

// ReclaimLease asks a session to send its LeaseClaim (if it holds a lease)
// to Pool. The Supervisor sends it to every session after a pool restart.
type ReclaimLease struct {
	Pool *actor.PID
}

// PoolStarted tells the Supervisor that an AddressPool incarnation began
// and needs the list of live sessions before it can serve requests.
type PoolStarted struct{}

// LiveSessions answers PoolStarted: every session the Supervisor has, each
// of which has been asked to reclaim its lease, and the grace reservations
// and static reservations the pool is to start from: the lease file's and
// the reservations file's at start, and after a crash the ones the
// previous incarnation handed over.
type LiveSessions struct {
	Sessions     []*actor.PID
	Reservations []Reservation
	Statics      []Static
}

// Static is an operator's fixed address for one client IPv6 address (the
// console's "reservation"): the pool never leases Addr to anyone else, and
// gives it to Client whenever Client connects. Not to be confused with
// Reservation, the pool's short-lived promise to a client that just left.
type Static struct {
	Client netip.Addr
	Addr   netip.Addr
	// Rate overrides the server's -rate-limit for this client, in bit/s;
	// 0 means no override.
	Rate uint64
}

// Reservation keeps an address for the client IPv6 address that held it,
// until Until.
type Reservation struct {
	Client netip.Addr
	Addr   netip.Addr
	Until  time.Time
}

// PoolHandover is what a failing AddressPool incarnation gives its parent
// to pass on to the next one: the reservations, which no live session can
// restate (their clients are gone) and which would otherwise be lost.
type PoolHandover struct {
	Reservations []Reservation
	// Statics are the operator's reservations, which may have changed
	// since the start (Reserve, Unreserve, reload).
	Statics []Static
	// Seeded is false when the failing incarnation had not yet been
	// given LiveSessions: its lists are empty because it never knew
	// them, and the Supervisor keeps the ones it has.
	Seeded bool
}

// HealthCheck asks a service actor to answer Healthy; one that does not
// answer within a short deadline is reported as unhealthy by /healthz.
type HealthCheck struct{}

// Healthy answers HealthCheck.
type Healthy struct{}

// Lease is one entry of the pool's table, the source of truth for who owns
// which address.
type Lease struct {
	Addr    netip.Addr
	Session *actor.PID
	Client  netip.AddrPort
	Since   time.Time
	Inbox   Budget
}

// LeasesQuery asks the pool for a copy of its table (status, tests).
type LeasesQuery struct{}

// LeaseTable answers LeasesQuery.
type LeaseTable struct {
	Leases []Lease
	Size   int
}

// RouteAdd tells the Router that packets for Addr belong to Session.
type RouteAdd struct {
	Addr    netip.Addr
	Session *actor.PID
	// Inbox is the session's budget of batches waiting in its mailbox:
	// the Router takes a token per batch without waiting and drops the
	// batch when none is left, so a session whose actor falls behind
	// cannot pile up batches beyond its queue. Nil means unbounded.
	Inbox Budget
}

// RouteDel removes Addr from the Router's map, but only if it still points
// at Session: a late delete must not remove a newer owner's route.
type RouteDel struct {
	Addr    netip.Addr
	Session *actor.PID
}

// RouteSync asks the pool for the full route table; a restarted Router
// sends it to rebuild its map.
type RouteSync struct{}

// RouteTable replaces the Router's whole map. The pool sends it in answer
// to RouteSync and after it has recovered its leases.
type RouteTable struct {
	Routes []RouteAdd
}

// RoutesQuery asks the Router for a copy of its map (status, tests).
type RoutesQuery struct{}

// Routes answers RoutesQuery.
type Routes struct {
	Routes map[netip.Addr]*actor.PID
}

// InjectPanic makes the receiving actor panic inside Receive. It exists
// for fault-injection tests of the supervision policy, and is only sent by
// tests or by the admin endpoint when fault injection is enabled.
type InjectPanic struct {
	Reason string
}

// Kick tells a session that an operator closed it (Server.Kick): it
// closes its connection with the reason kicked, and its address goes back
// to the pool like after any end.
type Kick struct{}

// Moved tells a session that its client showed up on another node of the
// fleet: it closes with the reason moved, and its address is handed to
// that node.
type Moved struct{}

// FleetLost tells a session that the node can no longer vouch for its
// address in etcd (a partition outlasted the binding lease, or a claim
// was taken while the node was cut off): it closes with the reason
// fleet_lost before another node can lease the address.
type FleetLost struct{}

// FleetState tells the Supervisor whether the node may take new sessions
// (ReadOnly: etcd cannot be reached safely; refuse with fleet_unavailable).
type FleetState struct {
	ReadOnly bool
}

// ReplySettings are the non-address fields of the 101 reply. The
// Supervisor sends them to every session when the operator reloads the
// configuration (SIGHUP); new sessions and repeated 100s use them.
type ReplySettings struct {
	Route netip.Addr
	DNS   [3]netip.Addr
}
