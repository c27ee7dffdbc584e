package actors

import "sync/atomic"

// DropReason says why a packet was not delivered. Drops are counted by
// reason, never returned as errors: a tunnel drops packets the way a router
// does and keeps going.
type DropReason int

// Drop reasons, in the order they appear on the packet path.
const (
	DropNotIPv4        DropReason = iota // 102 payload is not a well-formed IPv4 packet
	DropBeforeLease                      // 102 before the client asked for an address
	DropSpoofed                          // inner source is not the client's leased address
	DropTooBig                           // packet larger than the TUN MTU
	DropNoRoute                          // TUN packet for an address with no session
	DropQueueFull                        // the client's queue towards it is full
	DropTUNWrite                         // the device refused the packet
	DropClientToClient                   // to the pool while client-to-client traffic is off
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"not_ipv4", "before_lease", "spoofed", "too_big", "no_route", "queue_full", "tun_write", "client_to_client",
}

// String is the metric label for the reason.
func (r DropReason) String() string { return dropNames[r] }

// ActorKind names the actors whose restarts are counted.
type ActorKind int

// Actor kinds, for restart and failure counters.
const (
	KindSession ActorKind = iota
	KindPool
	KindRouter
	KindTUN
	numActorKinds
)

var kindNames = [numActorKinds]string{"session", "pool", "router", "tun"}

// String is the metric label for the kind.
func (k ActorKind) String() string { return kindNames[k] }

// FrameError classifies protocol violations that close a connection or are
// ignored, for the frame-error counters.
type FrameError int

// Frame error kinds.
const (
	FrameTooLarge   FrameError = iota // declared length beyond any IPv4 packet: framing lost
	FrameTruncated                    // connection ended inside a frame
	FrameUnknownTyp                   // a type we do not speak (consumed and ignored)
	numFrameErrors
)

var frameErrNames = [numFrameErrors]string{"too_large", "truncated", "unknown_type"}

// String is the metric label for the frame error.
func (f FrameError) String() string { return frameErrNames[f] }

// RefuseReason says why a connection was closed before it became a session.
type RefuseReason int

// Refusal reasons.
const (
	RefuseSessionLimit RefuseReason = iota // -max-sessions reached
	RefusePerSource                        // -max-per-source reached for that IPv6 address
	numRefuseReasons
)

var refuseNames = [numRefuseReasons]string{"session_limit", "per_source_limit"}

// String is the metric label for the reason.
func (r RefuseReason) String() string { return refuseNames[r] }

// Metrics are the engine's counters. They are atomics because the admin
// endpoint reads them from another goroutine; every counter is written by
// the actors only, and nothing reads them to make decisions.
type Metrics struct {
	SessionsOpened atomic.Uint64
	SessionsClosed atomic.Uint64
	SessionsActive atomic.Int64
	LeaseDenials   atomic.Uint64
	PoolSize       atomic.Int64 // addresses the pool can lease
	PoolLeased     atomic.Int64
	PacketsIn      atomic.Uint64 // client -> TUN
	BytesIn        atomic.Uint64
	PacketsOut     atomic.Uint64 // TUN -> client
	BytesOut       atomic.Uint64
	drops          [numDropReasons]atomic.Uint64
	failures       [numActorKinds]atomic.Uint64
	frameErrors    [numFrameErrors]atomic.Uint64
	refused        [numRefuseReasons]atomic.Uint64
}

// Refuse counts one connection refused for reason r.
func (m *Metrics) Refuse(r RefuseReason) { m.refused[r].Add(1) }

// Refused reads the refusal counter for r.
func (m *Metrics) Refused(r RefuseReason) uint64 { return m.refused[r].Load() }

// Drop counts n packets dropped for reason r.
func (m *Metrics) Drop(r DropReason, n int) { m.drops[r].Add(uint64(n)) }

// Drops reads the drop counter for r.
func (m *Metrics) Drops(r DropReason) uint64 { return m.drops[r].Load() }

// Failure counts one supervised failure (panic) of an actor of kind k.
func (m *Metrics) Failure(k ActorKind) { m.failures[k].Add(1) }

// Failures reads the failure counter for k.
func (m *Metrics) Failures(k ActorKind) uint64 { return m.failures[k].Load() }

// FrameError counts one protocol violation of kind f.
func (m *Metrics) FrameError(f FrameError) { m.frameErrors[f].Add(1) }

// FrameErrors reads the frame-error counter for f.
func (m *Metrics) FrameErrors(f FrameError) uint64 { return m.frameErrors[f].Load() }
