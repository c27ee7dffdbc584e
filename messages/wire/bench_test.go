package wire

import "testing"

// packet1400 is a typical full-MTU data payload: a valid IPv4 header followed
// by filler.
var packet1400 = func() []byte {
	p := make([]byte, 1400)
	copy(p, setTotal(cat(echoRequest[:20]), len(p)))
	return p
}()

// BenchmarkDecode measures the steady state of a busy session: 1405-byte data
// frames arriving as fast as the reader can fill the buffer.
func BenchmarkDecode(b *testing.B) {
	frame := AppendFrame(nil, TypeDataRequest, packet1400)
	d := NewDecoder(&loopReader{data: frame})
	defer d.Release()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendFrame measures framing a TUN packet into a reused write buffer.
func BenchmarkAppendFrame(b *testing.B) {
	buf := make([]byte, 0, MaxFrameLen)
	b.SetBytes(int64(len(packet1400) + HeaderLen))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFrame(buf[:0], TypeDataReply, packet1400)
	}
}

// BenchmarkParseIPv4 measures the per-packet check on the client-to-TUN path.
func BenchmarkParseIPv4(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := ParseIPv4(packet1400); err != nil {
			b.Fatal(err)
		}
	}
}
