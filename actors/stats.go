package actors

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// SessionStats are one session's counters. The session writes them and the
// status reader loads them, so they are atomics; nothing else is shared.
// The Supervisor creates them with the session and keeps them until it
// ends, so a status query needs no round trip to every session.
type SessionStats struct {
	Client     netip.AddrPort
	Since      time.Time
	addr       atomic.Uint32 // leased IPv4 as a number; 0 before the lease
	lastHeard  atomic.Int64  // unix nanoseconds
	PacketsIn  atomic.Uint64
	BytesIn    atomic.Uint64
	PacketsOut atomic.Uint64
	BytesOut   atomic.Uint64
	Drops      atomic.Uint64
	Queued     atomic.Int64 // packets waiting for the writer
}

func newSessionStats(client netip.AddrPort, now time.Time) *SessionStats {
	s := &SessionStats{Client: client, Since: now}
	s.lastHeard.Store(now.UnixNano())
	return s
}

func (s *SessionStats) setAddr(a netip.Addr) {
	b := a.As4()
	s.addr.Store(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
}

// Addr is the leased address, or the zero Addr before the lease.
func (s *SessionStats) Addr() netip.Addr {
	v := s.addr.Load()
	if v == 0 {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// LastHeard is when the client last sent any frame.
func (s *SessionStats) LastHeard() time.Time { return time.Unix(0, s.lastHeard.Load()) }

func (s *SessionStats) countIn(packets, bytes int) {
	s.PacketsIn.Add(uint64(packets))
	s.BytesIn.Add(uint64(bytes))
}

func (s *SessionStats) countOut(packets, bytes int) {
	s.PacketsOut.Add(uint64(packets))
	s.BytesOut.Add(uint64(bytes))
}

// SessionStatus is a point-in-time copy of one session, for the status
// endpoint and tests (like a peer section of `wg show`).
type SessionStatus struct {
	Client     netip.AddrPort
	Addr       netip.Addr
	Since      time.Time
	LastHeard  time.Time
	PacketsIn  uint64
	BytesIn    uint64
	PacketsOut uint64
	BytesOut   uint64
	Drops      uint64
	Queued     int64
}

// Snapshot copies the counters.
func (s *SessionStats) Snapshot() SessionStatus {
	return SessionStatus{
		Client: s.Client, Addr: s.Addr(), Since: s.Since, LastHeard: s.LastHeard(),
		PacketsIn: s.PacketsIn.Load(), BytesIn: s.BytesIn.Load(),
		PacketsOut: s.PacketsOut.Load(), BytesOut: s.BytesOut.Load(),
		Drops: s.Drops.Load(), Queued: s.Queued.Load(),
	}
}
