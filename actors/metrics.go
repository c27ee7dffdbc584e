package actors

import (
	"sync/atomic"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
)

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
	DropNotAssigned                      // TUN packet for a session that has not sent its 101 yet
	DropRateLimit                        // towards a client beyond its -rate-limit bucket
	DropSessionEnded                     // TUN packet towards a session that ended: still queued for it, or for its address less than -grace after
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"not_ipv4", "before_lease", "spoofed", "too_big", "no_route", "queue_full", "tun_write", "client_to_client", "not_assigned",
	"rate_limit", "session_ended",
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
	FrameStalled                      // a frame did not complete within -timeout of its first bytes
	numFrameErrors
)

var frameErrNames = [numFrameErrors]string{"too_large", "truncated", "unknown_type", "stalled"}

// String is the metric label for the frame error.
func (f FrameError) String() string { return frameErrNames[f] }

// RefuseReason says why a connection was closed before it became a session.
type RefuseReason int

// Refusal reasons.
const (
	RefuseSessionLimit     RefuseReason = iota // -max-sessions reached
	RefusePerSource                            // -max-per-source reached for that source (-source-prefix)
	RefuseNotAllowed                           // the client's address is outside -allow
	RefuseBanned                               // the source was banned by a kick with ?ban=
	RefuseFleetUnavailable                     // in a fleet, etcd cannot be reached safely: no new leases
	numRefuseReasons
)

var refuseNames = [numRefuseReasons]string{"session_limit", "per_source_limit", "not_allowed", "banned", "fleet_unavailable"}

// String is the metric label for the reason.
func (r RefuseReason) String() string { return refuseNames[r] }

// CloseReason says why a session ended, for the log and the counters.
type CloseReason int

// Session close reasons.
const (
	CloseStopped          CloseReason = iota // the server stopped it (shutdown, conflict)
	CloseClientClosed                        // the client closed the connection
	CloseTimeout                             // silence for -timeout
	CloseHandshakeTimeout                    // no address request within -handshake-timeout
	CloseFramingLost                         // a declared length beyond any packet
	CloseTruncated                           // the connection ended inside a frame
	CloseReadError                           // the socket failed while reading
	CloseWriteError                          // the socket failed or stalled while writing
	CloseLeaseDenied                         // no address for this client
	ClosePanic                               // the session actor or its reader panicked
	CloseFrameStalled                        // a frame did not complete within -timeout
	CloseKicked                              // an operator closed it (DELETE /api/v1/sessions/ADDR)
	CloseMoved                               // the client showed up on another node of the fleet
	CloseFleetLost                           // the node lost its address in etcd (partition outlasted the binding)
	numCloseReasons
)

var closeNames = [numCloseReasons]string{
	"stopped", "client_closed", "timeout", "handshake_timeout", "framing_lost",
	"truncated", "read_error", "write_error", "lease_denied", "panic", "frame_stalled",
	"kicked", "moved", "fleet_lost",
}

// String is the metric label for the reason.
func (r CloseReason) String() string { return closeNames[r] }

// FrameType groups the frames clients send, for frames_total: the types
// the protocol gives a client, and everything else.
type FrameType int

// Frame types counted by frames_total.
const (
	FrameTypeIPRequest FrameType = iota // 100
	FrameTypeData                       // 102
	FrameTypeHeartbeat                  // 104
	FrameTypeEncrypt                    // 200
	FrameTypeUnknown                    // any other type
	numFrameTypes
)

var frameTypeNames = [numFrameTypes]string{"100", "102", "104", "200", "unknown"}

// String is the metric label for the type.
func (t FrameType) String() string { return frameTypeNames[t] }

func frameTypeOf(typ byte) FrameType {
	switch typ {
	case wire.TypeIPRequest:
		return FrameTypeIPRequest
	case wire.TypeDataRequest:
		return FrameTypeData
	case wire.TypeHeartbeat:
		return FrameTypeHeartbeat
	case wire.TypeEncryptRequest:
		return FrameTypeEncrypt
	}
	return FrameTypeUnknown
}

// ICMPType names the ICMP errors the server originates, for
// icmp_sent_total and icmp_rate_limited_total.
type ICMPType int

// ICMP errors the server sends.
const (
	ICMPFragNeeded ICMPType = iota // type 3 code 4, for a DF packet above the TUN MTU
	numICMPTypes
)

var icmpNames = [numICMPTypes]string{"frag_needed"}

// String is the metric label for the type.
func (t ICMPType) String() string { return icmpNames[t] }

// frameCounts are a reader's own counts, added to Metrics in one go when
// the reader would block, so a flood of tiny frames costs no atomic
// operation per frame.
type frameCounts [numFrameTypes]uint64

// setupBuckets are the upper bounds, in seconds, of the session setup
// latency histogram (accept to 101 queued).
var setupBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// etcdBuckets are the upper bounds, in seconds, of the etcd round-trip
// histogram (a write waits for a quorum's fsync).
var etcdBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

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
	closed         [numCloseReasons]atomic.Uint64
	frames         [numFrameTypes]atomic.Uint64
	setup          histogram
	etcdRTT        histogram

	// TUNReaderWaits counts the times the TUN reader found its batches in
	// flight to the Router at the budget (routerBudget) and waited;
	// TUNReaderWaitNanos is the time it spent so. The kernel's TUN queue
	// fills meanwhile, and what overflows it is the device's TX drops.
	TUNReaderWaits     atomic.Uint64
	TUNReaderWaitNanos atomic.Uint64

	// Fleet mode (fleet*.go): blocks and /32 claims this node holds in
	// etcd, its state (0 ok, 1 read-only: no new leases) and failed lease
	// renewals.
	FleetBlocks        atomic.Int64
	FleetClaims        atomic.Int64
	FleetState         atomic.Int64
	FleetRenewFailures atomic.Uint64

	icmpSent    [numICMPTypes]atomic.Uint64
	icmpLimited [numICMPTypes]atomic.Uint64 // not sent: over the session's rate
	// Fragmented counts client packets above the TUN MTU without DF that
	// were split; FragmentsCreated counts the fragments written instead.
	Fragmented       atomic.Uint64
	FragmentsCreated atomic.Uint64

	// PoolReserved is the number of static reservations (leased or
	// not); ReservationsRejected counts those refused by Reserve or
	// skipped by a reload of the reservations file.
	PoolReserved         atomic.Int64
	ReservationsRejected atomic.Uint64
}

// Closed counts one session that ended for reason r.
func (m *Metrics) Closed(r CloseReason) { m.closed[r].Add(1) }

// ClosedBy reads the close counter for r.
func (m *Metrics) ClosedBy(r CloseReason) uint64 { return m.closed[r].Load() }

// Setup records one session's setup latency.
func (m *Metrics) Setup(d time.Duration) { m.setup.observe(setupBuckets, d) }

// SetupHistogram returns cumulative counts per bucket, the total count and
// the sum in seconds, in Prometheus' shape.
func (m *Metrics) SetupHistogram() (buckets map[float64]uint64, count uint64, sum float64) {
	return m.setup.read(setupBuckets)
}

// EtcdRTT records one etcd round trip of the fleet (a request or a lease
// renewal), so an operator sees what each session setup waits for.
func (m *Metrics) EtcdRTT(d time.Duration) { m.etcdRTT.observe(etcdBuckets, d) }

// EtcdRTTHistogram is EtcdRTT's histogram in Prometheus' shape.
func (m *Metrics) EtcdRTTHistogram() (buckets map[float64]uint64, count uint64, sum float64) {
	return m.etcdRTT.read(etcdBuckets)
}

// histogram is a fixed-bucket latency histogram of atomics: one slot per
// bound plus +Inf (at most 16 bounds).
type histogram struct {
	counts   [17]atomic.Uint64
	sumNanos atomic.Uint64
}

func (h *histogram) observe(bounds []float64, d time.Duration) {
	i := 0
	for i < len(bounds) && d.Seconds() > bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNanos.Add(uint64(d.Nanoseconds()))
}

func (h *histogram) read(bounds []float64) (buckets map[float64]uint64, count uint64, sum float64) {
	buckets = make(map[float64]uint64, len(bounds))
	for i, le := range bounds {
		count += h.counts[i].Load()
		buckets[le] = count
	}
	count += h.counts[len(bounds)].Load()
	return buckets, count, float64(h.sumNanos.Load()) / 1e9
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

// CountFrames adds a reader's counts and zeroes them; frames of unknown
// type are also frame errors.
func (m *Metrics) CountFrames(c *frameCounts) {
	for t, n := range c {
		if n != 0 {
			m.frames[t].Add(n)
			c[t] = 0
			if FrameType(t) == FrameTypeUnknown {
				m.frameErrors[FrameUnknownTyp].Add(n)
			}
		}
	}
}

// Frames reads the frame counter for t.
func (m *Metrics) Frames(t FrameType) uint64 { return m.frames[t].Load() }

// FrameErrors reads the frame-error counter for f.
func (m *Metrics) FrameErrors(f FrameError) uint64 { return m.frameErrors[f].Load() }

// ICMPSent counts n ICMP errors of type k queued to a client.
func (m *Metrics) ICMPSent(k ICMPType, n int) { m.icmpSent[k].Add(uint64(n)) }

// ICMPSentOf reads the sent counter for k.
func (m *Metrics) ICMPSentOf(k ICMPType) uint64 { return m.icmpSent[k].Load() }

// ICMPRateLimited counts one ICMP error of type k held back by the
// session's rate limit.
func (m *Metrics) ICMPRateLimited(k ICMPType) { m.icmpLimited[k].Add(1) }

// ICMPRateLimitedOf reads the rate-limited counter for k.
func (m *Metrics) ICMPRateLimitedOf(k ICMPType) uint64 { return m.icmpLimited[k].Load() }
