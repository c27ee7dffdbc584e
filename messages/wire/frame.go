// Package wire is the 4over6 wire format: frames, the frame decoder, the 101
// reply text, IPv4 packet checks and the pooled packet buffers. The server's
// sessions and the client share one definition of every byte on the wire,
// the codec can be tested and fuzzed without sockets, a TUN device or an
// actor system, and a client built on it does not link the actor runtime
// (package messages, beside it, is the actors' vocabulary).
//
// The wire format is the one the existing lab clients speak (see
// docs/protocol.md): a
// 5-byte header (a little-endian uint32 length counting the whole message, then a
// type byte) followed by length-5 payload bytes.
package wire

import (
	"encoding/binary"
	"fmt"
)

// Message types. The numbers are fixed by the lab clients; the comments say who
// sends each one.
const (
	// TypeIPRequest is sent by a client to obtain (or, resent, to confirm) its
	// address; its payload, if any, is junk.
	TypeIPRequest byte = 100
	// TypeIPReply carries the leased address, route and DNS servers as text.
	TypeIPReply byte = 101
	// TypeDataRequest carries one IPv4 packet from the client towards the TUN.
	TypeDataRequest byte = 102
	// TypeDataReply carries one IPv4 packet from the TUN to the client.
	TypeDataReply byte = 103
	// TypeHeartbeat keeps both ends alive; many clients reset their liveness
	// timer only on this type.
	TypeHeartbeat byte = 104
	// TypeUnsupported is our answer to an extension we do not speak, which makes
	// the known extension clients fall back to the plain protocol.
	TypeUnsupported byte = 199
	// TypeEncryptRequest is a client extension asking for encryption; we answer
	// it with TypeUnsupported.
	TypeEncryptRequest byte = 200
)

// Sizes of the framing, exported because callers size their write buffers and
// their TUN MTU checks from them.
const (
	// HeaderLen is the length prefix plus the type byte.
	HeaderLen = 5
	// MaxPayload is the largest payload we accept or send: one IPv4 packet can
	// never be larger, so anything above it means framing is lost.
	MaxPayload = 65535
	// MaxFrameLen is the largest declared length we accept.
	MaxFrameLen = HeaderLen + MaxPayload
)

// Frame is one decoded message. Payload aliases the decoder's buffer and is
// valid only until the next call to Next, so that decoding never copies or
// allocates; callers that keep a payload must copy it.
type Frame struct {
	Type byte
	// Length is the length as declared on the wire, kept so that sloppy
	// clients (a length below HeaderLen) can be counted; it is not always
	// HeaderLen+len(Payload).
	Length  uint32
	Payload []byte
}

// FrameTooLargeError reports a declared length above MaxFrameLen. The stream can
// no longer be split into messages (an incompatible peer, or an attack), so the
// connection must be closed; it is a type rather than a sentinel so that the log
// line can show the offending length.
type FrameTooLargeError struct {
	Length uint32
}

// Error makes FrameTooLargeError an error.
func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("messages: declared frame length %d exceeds %d, framing lost", e.Length, MaxFrameLen)
}

// Canned control frames, prebuilt because they are sent often (a heartbeat every
// 20 s per session) and never change. Callers must not modify them.
var (
	// Heartbeat is a complete type 104 frame.
	Heartbeat = []byte{HeaderLen, 0, 0, 0, TypeHeartbeat}
	// Unsupported is a complete type 199 frame, the answer to an extension
	// request such as TypeEncryptRequest.
	Unsupported = []byte{HeaderLen, 0, 0, 0, TypeUnsupported}
)

// AppendHeader appends the header of a frame whose payload the caller writes
// itself, so that a packet can be framed without copying it twice. It panics if
// payloadLen is outside 0..MaxPayload: such a frame would desynchronise the peer,
// and callers bound their payloads (the TUN MTU) long before this point.
func AppendHeader(dst []byte, typ byte, payloadLen int) []byte {
	if payloadLen < 0 || payloadLen > MaxPayload {
		panic(fmt.Sprintf("messages: payload length %d outside 0..%d", payloadLen, MaxPayload))
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(payloadLen+HeaderLen))
	return append(dst, typ)
}

// AppendFrame appends a whole frame, so that it can go out in a single write:
// messages of one connection must never interleave, and some clients expect a
// message in one read. It panics like AppendHeader on an oversized payload.
func AppendFrame(dst []byte, typ byte, payload []byte) []byte {
	dst = AppendHeader(dst, typ, len(payload))
	return append(dst, payload...)
}

// frameSize is the number of bytes a frame with the declared length occupies on
// the wire: lengths below HeaderLen (some clients send 0) mean header only.
func frameSize(length uint32) int {
	if length < HeaderLen {
		return HeaderLen
	}
	return int(length)
}
