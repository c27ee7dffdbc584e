package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// Options for the fragmentation tests: loose source route (copied into
// every fragment, type 0x83) and record route (first fragment only, 7).
var (
	lsrrOption = []byte{0x83, 7, 4, 198, 51, 100, 9}
	rrOption   = []byte{7, 7, 4, 0, 0, 0, 0}
)

func TestFragment(t *testing.T) {
	tests := []struct {
		name    string
		pkt     testPacket
		mtu     int
		sizes   []int // total length of each fragment
		later   []byte
		wantErr error
	}{
		{"1500 bytes into 1400", testPacket{proto: protoUDP, id: 77, length: 1480}, 1400, []int{1396, 124}, nil, nil},
		{"data a multiple of the chunk", testPacket{proto: protoUDP, length: 2 * 1376}, 1400, []int{1396, 1396}, nil, nil},
		{"one byte over", testPacket{proto: protoTCP, length: 1381}, 1400, []int{1396, 25}, nil, nil},
		{"MTU not a multiple of 8 past the header", testPacket{proto: protoUDP, length: 1000}, 579, []int{572, 468}, nil, nil},
		{"largest packet into the smallest MTU", testPacket{proto: protoUDP, length: 65515}, 68, nil, nil, nil},
		{"a middle fragment is split again", testPacket{proto: protoUDP, flags: ipv4FlagMF | 100, length: 1480}, 1400, []int{1396, 124}, nil, nil},
		{"a last fragment is split again", testPacket{proto: protoUDP, flags: 100, length: 1480}, 1400, []int{1396, 124}, nil, nil},
		{"reserved bit kept", testPacket{proto: protoUDP, flags: 0x8000, length: 1480}, 1400, []int{1396, 124}, nil, nil},
		{
			"copied options kept, others become NOPs",
			testPacket{proto: protoUDP, options: cat(lsrrOption, rrOption, []byte{1, 0}), length: 1480}, 1400,
			[]int{1396, 156},
			cat(lsrrOption, []byte{1, 1, 1, 1, 1, 1, 1}, []byte{1, 0}), nil,
		},
		{"options after the end of the list are padding", testPacket{proto: protoUDP, options: []byte{0, 9, 9, 9}, length: 1480}, 1400, []int{1400, 128}, []byte{0, 9, 9, 9}, nil},
		{"option longer than the header", testPacket{proto: protoUDP, options: []byte{7, 9, 0, 0}, length: 1480}, 1400, nil, nil, ErrBadOptions},
		{"option length 0", testPacket{proto: protoUDP, options: []byte{1, 1, 0x83, 0}, length: 1480}, 1400, nil, nil, ErrBadOptions},
		{"option without a length", testPacket{proto: protoUDP, options: []byte{1, 1, 1, 0x83}, length: 1480}, 1400, nil, nil, ErrBadOptions},
		{"MTU below header and 8 bytes", testPacket{proto: protoUDP, options: make([]byte, 40), length: 100}, 67, nil, nil, ErrMTUTooSmall},
		{"offset beyond 64 KiB", testPacket{proto: protoUDP, flags: 8000, length: 2000}, 1400, nil, nil, ErrBadOffset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := tt.pkt.build()
			orig := bytes.Clone(pkt)
			var frags [][]byte
			err := Fragment(pkt, tt.mtu, func(f []byte) { frags = append(frags, f) })
			defer func() {
				for _, f := range frags {
					ReleasePacket(f)
				}
			}()
			if !bytes.Equal(pkt, orig) {
				t.Fatal("the packet was modified")
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if len(frags) != 0 {
					t.Fatalf("%d fragments emitted before the error", len(frags))
				}
				return
			}
			checkFragments(t, pkt, frags, tt.mtu)
			if tt.sizes != nil {
				var sizes []int
				for _, f := range frags {
					sizes = append(sizes, len(f))
				}
				if !equalInts(sizes, tt.sizes) {
					t.Errorf("fragment sizes %v, want %v", sizes, tt.sizes)
				}
			}
			for _, f := range frags[1:] {
				if tt.later != nil && !bytes.Equal(f[20:20+len(tt.later)], tt.later) {
					t.Errorf("later fragment options %x, want %x", f[20:int(f[0]&0xf)*4], tt.later)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkFragments checks what any correct fragmentation of pkt into mtu
// satisfies (RFC 791): every fragment fits, is a valid IPv4 packet with a
// verified header checksum and the original's identity (ID, protocol,
// addresses, TOS, TTL), data in multiples of 8 bytes except in the last,
// MF on all but the last, which keeps the original's, and that the data at
// the fragments' offsets, put together, is the original's.
func checkFragments(t *testing.T, pkt []byte, frags [][]byte, mtu int) {
	t.Helper()
	if len(frags) < 1 {
		t.Fatal("no fragments")
	}
	headerLen := int(pkt[0]&0x0f) * 4
	fields := binary.BigEndian.Uint16(pkt[6:])
	start := int(fields&ipv4OffsetMask) * 8
	data := pkt[headerLen:]
	got := make([]byte, len(data))
	next := start
	for i, f := range frags {
		last := i == len(frags)-1
		if len(f) > mtu {
			t.Fatalf("fragment %d has %d bytes, MTU %d", i, len(f), mtu)
		}
		parsed, _, _, err := ParseIPv4(f)
		if err != nil || len(parsed) != len(f) {
			t.Fatalf("fragment %d is not a whole IPv4 packet (%v)", i, err)
		}
		h := int(f[0]&0x0f) * 4
		if h != headerLen || sum16(f[:h]) != 0xffff {
			t.Fatalf("fragment %d: header length %d (want %d), checksum sum %#x", i, h, headerLen, sum16(f[:h]))
		}
		if !bytes.Equal(f[1:2], pkt[1:2]) || !bytes.Equal(f[4:6], pkt[4:6]) || !bytes.Equal(f[8:10], pkt[8:10]) || !bytes.Equal(f[12:20], pkt[12:20]) {
			t.Fatalf("fragment %d: TOS, ID, TTL, protocol or addresses differ: %x, want %x", i, f[:20], pkt[:20])
		}
		if i == 0 && !bytes.Equal(f[20:h], pkt[20:headerLen]) {
			t.Fatalf("first fragment's options %x, want the original's %x", f[20:h], pkt[20:headerLen])
		}
		ff := binary.BigEndian.Uint16(f[6:])
		if ff&^(ipv4FlagMF|ipv4OffsetMask) != fields&^(ipv4FlagMF|ipv4OffsetMask) {
			t.Fatalf("fragment %d: flags %#x, want DF and the reserved bit as in %#x", i, ff, fields)
		}
		wantMF := !last || fields&ipv4FlagMF != 0
		if (ff&ipv4FlagMF != 0) != wantMF {
			t.Fatalf("fragment %d: MF %v, want %v", i, ff&ipv4FlagMF != 0, wantMF)
		}
		off, n := int(ff&ipv4OffsetMask)*8, len(f)-h
		if off != next || (!last && n%8 != 0) || n == 0 && len(data) > 0 {
			t.Fatalf("fragment %d: offset %d, %d bytes of data; want offset %d and a multiple of 8", i, off, n, next)
		}
		copy(got[off-start:], f[h:])
		next = off + n
	}
	if next != start+len(data) || !bytes.Equal(got, data) {
		t.Fatal("the fragments' data put together is not the original's")
	}
}

// FuzzFragment fragments every packet ParseIPv4 accepts at any legal MTU
// and checks the fragments; a refusal must be one of the documented
// errors, with nothing emitted.
func FuzzFragment(f *testing.F) {
	f.Add(testPacket{proto: protoUDP, length: 1480}.build(), uint16(1400))
	f.Add(testPacket{proto: protoUDP, flags: ipv4FlagMF | 8, options: cat(lsrrOption, rrOption, []byte{1, 0}), length: 1000}.build(), uint16(576))
	f.Add(testPacket{proto: protoUDP, options: []byte{7, 9, 0, 0}, length: 200}.build(), uint16(68))
	f.Add(echoRequest, uint16(28))
	f.Fuzz(func(t *testing.T, data []byte, mtu uint16) {
		pkt, _, _, err := ParseIPv4(data)
		if err != nil {
			return
		}
		m := 68 + int(mtu)%(65535-68+1)
		var frags [][]byte
		err = Fragment(pkt, m, func(f []byte) { frags = append(frags, f) })
		defer func() {
			for _, f := range frags {
				ReleasePacket(f)
			}
		}()
		if err != nil {
			if len(frags) != 0 || !(errors.Is(err, ErrBadOptions) || errors.Is(err, ErrBadOffset) || errors.Is(err, ErrMTUTooSmall)) {
				t.Fatalf("error %v after %d fragments", err, len(frags))
			}
			return
		}
		checkFragments(t, pkt, frags, m)
	})
}
