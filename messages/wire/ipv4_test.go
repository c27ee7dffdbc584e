package wire

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// edit returns a copy of the golden echo request changed by f.
func edit(f func(p []byte) []byte) []byte {
	return f(cat(echoRequest))
}

func setTotal(p []byte, total int) []byte {
	binary.BigEndian.PutUint16(p[2:4], uint16(total))
	return p
}

func TestParseIPv4(t *testing.T) {
	withOptions := edit(func(p []byte) []byte {
		p = cat(p[:20], []byte{1, 1, 1, 1}, p[20:]) // four NOP options
		p[0] = 0x46
		return setTotal(p, len(p))
	})
	tests := []struct {
		name    string
		payload []byte
		wantLen int
		err     error
	}{
		{"echo request", echoRequest, 36, nil},
		{"trailing junk is trimmed", cat(echoRequest, junk16), 36, nil},
		{"header options", withOptions, 40, nil},
		{"header only", edit(func(p []byte) []byte { return setTotal(p[:20], 20) }), 20, nil},
		{"empty", nil, 0, ErrTruncated},
		{"IPv6 packet", edit(func(p []byte) []byte { p[0] = 0x60; return p }), 0, ErrNotIPv4},
		{"version 0", make([]byte, 40), 0, ErrNotIPv4},
		{"one byte", []byte{0x45}, 0, ErrTruncated},
		{"shorter than a header", echoRequest[:19], 0, ErrTruncated},
		{"IHL 4", edit(func(p []byte) []byte { p[0] = 0x44; return p }), 0, ErrBadHeaderLen},
		{"IHL 0", edit(func(p []byte) []byte { p[0] = 0x40; return p }), 0, ErrBadHeaderLen},
		{"total length 0", edit(func(p []byte) []byte { return setTotal(p, 0) }), 0, ErrBadTotalLen},
		{"total length below options", edit(func(p []byte) []byte { p[0] = 0x46; return setTotal(p, 22) }), 0, ErrBadTotalLen},
		{"total length above payload", edit(func(p []byte) []byte { return setTotal(p, 37) }), 0, ErrTruncated},
		{"header beyond payload", edit(func(p []byte) []byte { p[0] = 0x4f; return setTotal(p, 60) }), 0, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt, src, dst, err := ParseIPv4(tt.payload)
			if err != tt.err {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if err != nil {
				if pkt != nil || src.IsValid() || dst.IsValid() {
					t.Errorf("rejected packet returned %x, %v, %v", pkt, src, dst)
				}
				return
			}
			if len(pkt) != tt.wantLen || &pkt[0] != &tt.payload[0] {
				t.Errorf("pkt has %d bytes, want the first %d bytes of the payload, not a copy", len(pkt), tt.wantLen)
			}
			if src != netip.MustParseAddr("13.8.0.2") || dst != netip.MustParseAddr("8.8.8.8") {
				t.Errorf("src %v dst %v, want 13.8.0.2 and 8.8.8.8", src, dst)
			}
		})
	}
}

func TestParseIPv4DoesNotAllocate(t *testing.T) {
	bad := edit(func(p []byte) []byte { return setTotal(p, 999) })
	allocs := testing.AllocsPerRun(100, func() {
		_, _, _, _ = ParseIPv4(echoRequest)
		_, _, _, _ = ParseIPv4(bad)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call, want 0", allocs)
	}
}
