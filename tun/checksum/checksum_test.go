package checksum_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/4over6d/4over6d/tun/checksum"
)

// reference is RFC 1071 written the plain way, to check the 64-bit Sum and
// Fold against: initial folded to 16 bits, then 16-bit big-endian words with
// the odd last byte padded, folded after every addition.
func reference(b []byte, initial uint64) uint16 {
	s := initial
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	for i := 0; i < len(b); i += 2 {
		w := uint64(b[i]) << 8
		if i+1 < len(b) {
			w |= uint64(b[i+1])
		}
		s += w
		for s > 0xffff {
			s = s>>16 + s&0xffff
		}
	}
	return uint16(s)
}

func TestKnownValues(t *testing.T) {
	// RFC 1071 section 3's example: the folded sum of these bytes is ddf2.
	if got := checksum.Fold(checksum.Sum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0)); got != 0xddf2 {
		t.Errorf("RFC 1071 example: Fold(Sum) = %#04x, want 0xddf2", got)
	}
	// An IPv4 header (UDP, 192.168.0.1 -> 192.168.0.199) whose checksum is b861.
	hdr := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := checksum.Checksum(hdr, 0); got != 0 {
		t.Errorf("header with a valid checksum: Checksum = %#04x, want 0", got)
	}
	if got := checksum.Fold(checksum.Sum(hdr, 0)); got != 0xffff {
		t.Errorf("header with a valid checksum: Fold(Sum) = %#04x, want 0xffff", got)
	}
	zeroed := bytes.Clone(hdr)
	zeroed[10], zeroed[11] = 0, 0
	if got := checksum.Checksum(zeroed, 0); got != 0xb861 {
		t.Errorf("header with the field zeroed: Checksum = %#04x, want 0xb861", got)
	}
}

func TestAgainstReference(t *testing.T) {
	ff := func(n int) []byte { return bytes.Repeat([]byte{0xff}, n) }
	seq := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 3)
		}
		return b
	}
	cases := []struct {
		name    string
		b       []byte
		initial uint64
	}{
		{"empty", nil, 0},
		{"empty with initial", nil, 0x1_2345},
		{"one byte", []byte{0xab}, 0},
		{"two bytes", []byte{0xab, 0xcd}, 0},
		{"three bytes", []byte{0xab, 0xcd, 0xef}, 0},
		{"zeros", make([]byte, 64), 0},
		{"all 0xff, 1", ff(1), 0},
		{"all 0xff, 2", ff(2), 0},
		{"all 0xff, 7", ff(7), 0},
		{"all 0xff, 8", ff(8), 0},
		{"all 0xff, 31", ff(31), 0},
		{"all 0xff, 33", ff(33), 0},
		{"all 0xff, 64 KiB", ff(65535), 0},
		{"all 0xff with initial", ff(40), 0xffff_ffff_ffff_ffff},
		{"carries into every word", append(ff(63), 0x01), 0},
		{"0xffff plus one", []byte{0xff, 0xff, 0x00, 0x01}, 0},
		{"initial alone folds", nil, 0xffff_ffff_ffff_ffff},
		{"initial near overflow", seq(100), 0xffff_ffff_ffff_fff0},
		{"sequence 9 (8-byte loop and odd tail)", seq(9), 0},
		{"sequence 1499", seq(1499), 0x2_0011},
		{"sequence 1500", seq(1500), 0x2_0011},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := reference(tc.b, tc.initial)
			if got := checksum.Fold(checksum.Sum(tc.b, tc.initial)); got != want {
				t.Fatalf("Fold(Sum) = %#04x, reference %#04x", got, want)
			}
			if got := checksum.Checksum(tc.b, tc.initial); got != ^want {
				t.Fatalf("Checksum = %#04x, want %#04x", got, ^want)
			}
		})
	}
}

// nearOverflow are initial sums at and just below the top of the 64-bit
// range, where a carry lost in Sum's end-around arithmetic would show.
var nearOverflow = []uint64{
	0xffff_ffff_ffff_ffff, 0xffff_ffff_ffff_fffe, 0xffff_ffff_ffff_0000,
	0xffff_ffff_0000_0001, 0x8000_0000_0000_0000, 0x7fff_ffff_ffff_ffff,
}

// TestRandom compares with the reference over every length up to 300, at
// every alignment of the first byte within a word, from random and
// near-overflow initial sums, with random content and with all 0xff (a
// carry out of every addition). It also checks that summing in pieces at
// even offsets is the same as summing at once.
func TestRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	backing := make([]byte, 300+8)
	for n := range 301 {
		for off := range 8 {
			b := backing[off : off+n]
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			checkSum(t, b, r.Uint64()>>r.IntN(65), r.IntN(n+1))
			checkSum(t, b, nearOverflow[r.IntN(len(nearOverflow))], r.IntN(n+1))
			for i := range b {
				b[i] = 0xff
			}
			checkSum(t, b, nearOverflow[r.IntN(len(nearOverflow))], r.IntN(n+1))
		}
	}
}

// TestBaseline keeps the benchmark's baseline honest: it must agree with
// the reference too, or BenchmarkSum compares against a wrong sum.
func TestBaseline(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := range 301 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		initial := r.Uint64() >> r.IntN(65)
		if got, want := checksum.Fold(sumBaseline(b, initial)), reference(b, initial); got != want {
			t.Fatalf("% x from %#x: Fold(sumBaseline) = %#04x, reference %#04x", b, initial, got, want)
		}
	}
}

// TestSumAllocs checks that Sum allocates nothing: it runs once for every
// packet the server forwards.
func TestSumAllocs(t *testing.T) {
	b := make([]byte, 1501)
	if n := testing.AllocsPerRun(100, func() { sink = checksum.Sum(b, sink) }); n != 0 {
		t.Fatalf("Sum allocates %v times a call, want 0", n)
	}
}

// FuzzSum compares with the reference for any content, initial sum, split
// point and alignment (off shifts the data within its buffer). Its seeds
// run as a normal test; `go test -fuzz FuzzSum` explores further.
func FuzzSum(f *testing.F) {
	f.Add([]byte{}, uint64(0), 0, uint8(0))
	f.Add([]byte{0xff, 0xff, 0xff}, uint64(0xffff), 1, uint8(1))
	f.Add(bytes.Repeat([]byte{0xff}, 100), uint64(1<<63), 40, uint8(3))
	f.Add(bytes.Repeat([]byte{0xff}, 129), uint64(0xffff_ffff_ffff_ffff), 64, uint8(7))
	f.Add(bytes.Repeat([]byte{0xff}, 64), uint64(0xffff_ffff_ffff_fffe), 0, uint8(5))
	f.Add(bytes.Repeat([]byte{0x80, 0x00}, 75), uint64(0), 33, uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, initial uint64, split int, off uint8) {
		if split < 0 {
			split = -split
		}
		o := int(off % 8)
		b := make([]byte, o+len(data))[o:]
		copy(b, data)
		checkSum(t, b, initial, split%(len(b)+1))
	})
}

func checkSum(t *testing.T, b []byte, initial uint64, split int) {
	t.Helper()
	want := reference(b, initial)
	if got := checksum.Fold(checksum.Sum(b, initial)); got != want {
		t.Fatalf("% x from %#x: Fold(Sum) = %#04x, reference %#04x", b, initial, got, want)
	}
	split &^= 1 // pieces must start at even offsets
	if got := checksum.Fold(checksum.Sum(b[split:], checksum.Sum(b[:split], initial))); got != want {
		t.Fatalf("% x from %#x split at %d: Fold(Sum) = %#04x, reference %#04x", b, initial, split, got, want)
	}
	// Writing the checksum into a zeroed field makes the data verify.
	if len(b) >= 2 {
		c := bytes.Clone(b)
		c[0], c[1] = 0, 0
		binary.BigEndian.PutUint16(c, checksum.Checksum(c, initial))
		if got := checksum.Fold(checksum.Sum(c, initial)); got != 0xffff {
			t.Fatalf("% x from %#x with its checksum: Fold(Sum) = %#04x, want 0xffff", c, initial, got)
		}
	}
}

// BenchmarkChecksum1500 is the checksum of one full-sized packet, folded.
func BenchmarkChecksum1500(b *testing.B) {
	pkt := make([]byte, 1500)
	for i := range pkt {
		pkt[i] = byte(i)
	}
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		_ = checksum.Checksum(pkt, 0)
	}
}
