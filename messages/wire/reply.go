package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ErrMalformedIPReply reports a 101 payload that does not hold exactly five IPv4
// addresses; a client cannot configure its tunnel from it.
var ErrMalformedIPReply = errors.New("messages: malformed IP reply")

// ipReplyFields names the fields of a 101 payload in wire order, for errors.
var ipReplyFields = [5]string{"address", "route", "dns1", "dns2", "dns3"}

// maxIPReplyLen is the longest payload Format produces: five dotted quads of at
// most 15 characters, each followed by a space, then the NUL.
const maxIPReplyLen = 5*len("255.255.255.255 ") + 1

// IPReply is the configuration a 101 message hands to a client: its tunnel
// address, the route to send through the tunnel and three DNS servers.
type IPReply struct {
	Addr  netip.Addr
	Route netip.Addr
	DNS   [3]netip.Addr
}

// Format returns the 101 payload "<ip> <route> <dns1> <dns2> <dns3> " plus a
// NUL. Both the trailing space and the NUL are required: two known clients
// append to the string and split on spaces, and another walks past its buffer
// when neither follows the last field. A field that is not IPv4 (the zero Addr
// included) is written as 0.0.0.0, which for Route means the default route and
// which every client can parse; IPv4-mapped IPv6 addresses are unmapped.
func (r IPReply) Format() []byte {
	return r.appendPayload(make([]byte, 0, maxIPReplyLen))
}

// AppendFrame appends the whole 101 frame, because some clients read it with a
// single read() and so it must go out in a single write.
func (r IPReply) AppendFrame(dst []byte) []byte {
	at := len(dst)
	dst = AppendHeader(dst, TypeIPReply, 0)
	dst = r.appendPayload(dst)
	binary.LittleEndian.PutUint32(dst[at:], uint32(len(dst)-at))
	return dst
}

func (r IPReply) appendPayload(dst []byte) []byte {
	for _, a := range [5]netip.Addr{r.Addr, r.Route, r.DNS[0], r.DNS[1], r.DNS[2]} {
		dst = appendIPv4(dst, a)
		dst = append(dst, ' ')
	}
	return append(dst, 0)
}

func appendIPv4(dst []byte, a netip.Addr) []byte {
	a = a.Unmap()
	if !a.Is4() {
		a = netip.IPv4Unspecified()
	}
	return a.AppendTo(dst)
}

// ParseIPReply reads a 101 payload, for our client and for tests. It is
// tolerant about what servers are known to vary (a missing trailing space or
// NUL, a trailing newline, repeated spaces, junk after the NUL) and strict about
// what a client needs: exactly five dotted-quad IPv4 addresses. Errors wrap
// ErrMalformedIPReply.
func ParseIPReply(b []byte) (IPReply, error) {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	fields := bytes.Fields(b)
	if len(fields) != len(ipReplyFields) {
		return IPReply{}, fmt.Errorf("%w: %d fields, want 5 (address, route, 3 DNS servers)", ErrMalformedIPReply, len(fields))
	}
	var addrs [5]netip.Addr
	for i, f := range fields {
		a, err := netip.ParseAddr(string(f))
		if err != nil || !a.Is4() {
			return IPReply{}, fmt.Errorf("%w: %s field %q is not an IPv4 address", ErrMalformedIPReply, ipReplyFields[i], clip(f))
		}
		addrs[i] = a
	}
	return IPReply{Addr: addrs[0], Route: addrs[1], DNS: [3]netip.Addr{addrs[2], addrs[3], addrs[4]}}, nil
}

// clip shortens a field quoted in an error, since the peer controls its length.
func clip(f []byte) []byte {
	const limit = 32
	if len(f) > limit {
		return f[:limit]
	}
	return f
}
