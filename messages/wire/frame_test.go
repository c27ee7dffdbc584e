package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// echoRequest and echoReply are the IPv4 packets inside the golden 102 and 103
// vectors: an ICMP echo between 13.8.0.2 and 8.8.8.8 with valid checksums.
var (
	echoRequest = mustHex("45000024beef400040015ed00d080002080808080800a79e12340001346f766572362121")
	echoReply   = mustHex("45000024beef400040015ed0080808080d0800020000af9e12340001346f766572362121")
	junk16      = mustHex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
)

// protocolExample is the classic lab IP reply (13.8.0.0/24 pool, the lab's
// own DNS servers); docs/protocol.md shows the same shape with documentation
// addresses.
var protocolExample = IPReply{
	Addr:  netip.MustParseAddr("13.8.0.2"),
	Route: netip.MustParseAddr("0.0.0.0"),
	DNS: [3]netip.Addr{
		netip.MustParseAddr("202.38.120.242"),
		netip.MustParseAddr("8.8.8.8"),
		netip.MustParseAddr("202.106.0.20"),
	},
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// readGolden reads a testdata vector: a "#" comment line saying what it is,
// then hex bytes separated by white space.
func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for i, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i == 0 {
			t.Fatalf("%s: first line must be a # comment saying what the vector is", name)
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func wantFrame(typ byte, length uint32, payload []byte) Frame {
	return Frame{Type: typ, Length: length, Payload: payload}
}

// sameErr compares a decoder error with the expected one; a
// *FrameTooLargeError is compared by the length it reports.
func sameErr(got, want error) bool {
	var wantBig *FrameTooLargeError
	if errors.As(want, &wantBig) {
		var gotBig *FrameTooLargeError
		return errors.As(got, &gotBig) && *gotBig == *wantBig
	}
	return errors.Is(got, want)
}

// decodeAll runs a decoder to its final error, copying every payload since it
// is only valid until the next call to Next.
func decodeAll(r io.Reader) ([]Frame, error) {
	d := NewDecoder(r)
	defer d.Release()
	var frames []Frame
	for {
		f, err := d.Next()
		if err != nil {
			return frames, err
		}
		f.Payload = bytes.Clone(f.Payload)
		frames = append(frames, f)
	}
}

func checkFrames(t *testing.T, got, want []Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Type != w.Type || g.Length != w.Length || !bytes.Equal(g.Payload, w.Payload) {
			t.Errorf("frame %d: got type %d length %d payload %x, want type %d length %d payload %x",
				i, g.Type, g.Length, g.Payload, w.Type, w.Length, w.Payload)
		}
	}
}

func TestAppendFrame(t *testing.T) {
	tests := []struct {
		name    string
		typ     byte
		payload []byte
		want    []byte
	}{
		{"ip request", TypeIPRequest, nil, mustHex("0500000064")},
		{"ip reply", TypeIPReply, []byte("a\x00"), mustHex("0700000065" + "6100")},
		{"data request", TypeDataRequest, echoRequest, cat(mustHex("2900000066"), echoRequest)},
		{"data reply", TypeDataReply, echoReply, cat(mustHex("2900000067"), echoReply)},
		{"heartbeat", TypeHeartbeat, nil, mustHex("0500000068")},
		{"unsupported", TypeUnsupported, nil, mustHex("05000000c7")},
		{"encrypt request", TypeEncryptRequest, nil, mustHex("05000000c8")},
		{"max payload", TypeDataReply, make([]byte, MaxPayload), cat(mustHex("0400010067"), make([]byte, MaxPayload))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("earlier frames")
			got := AppendFrame(bytes.Clone(prefix), tt.typ, tt.payload)
			if !bytes.Equal(got, cat(prefix, tt.want)) {
				t.Errorf("AppendFrame = %x, want %x after the prefix", got, tt.want)
			}
			header := AppendHeader(nil, tt.typ, len(tt.payload))
			if !bytes.Equal(header, tt.want[:HeaderLen]) {
				t.Errorf("AppendHeader = %x, want %x", header, tt.want[:HeaderLen])
			}
		})
	}
}

func TestAppendHeaderRejectsImpossibleLengths(t *testing.T) {
	for _, n := range []int{-1, MaxPayload + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AppendHeader(payloadLen=%d) did not panic", n)
				}
			}()
			AppendHeader(nil, TypeDataReply, n)
		}()
	}
}

func TestCannedFrames(t *testing.T) {
	if want := AppendFrame(nil, TypeHeartbeat, nil); !bytes.Equal(Heartbeat, want) {
		t.Errorf("Heartbeat = %x, want %x", Heartbeat, want)
	}
	if want := AppendFrame(nil, TypeUnsupported, nil); !bytes.Equal(Unsupported, want) {
		t.Errorf("Unsupported = %x, want %x", Unsupported, want)
	}
}

func TestFrameTooLargeErrorMessage(t *testing.T) {
	msg := (&FrameTooLargeError{Length: 70000}).Error()
	if !strings.Contains(msg, "70000") || !strings.Contains(msg, "65540") {
		t.Errorf("message %q should name the declared length and the limit", msg)
	}
}

// goldenCases lists every vector in testdata with the frames it must decode to
// and, where we are the sender (server or our client), how we encode it.
var goldenCases = []struct {
	file   string
	frames []Frame
	err    error
	encode func() []byte
}{
	{"100_ip_request.hex", []Frame{wantFrame(100, 5, nil)}, io.EOF,
		func() []byte { return AppendFrame(nil, TypeIPRequest, nil) }},
	{"100_length_zero.hex", []Frame{wantFrame(100, 0, nil)}, io.EOF, nil},
	{"100_extra3.hex", []Frame{wantFrame(100, 8, make([]byte, 3))}, io.EOF, nil},
	{"100_struct_4101.hex", []Frame{wantFrame(100, 4101, make([]byte, 4096))}, io.EOF, nil},
	{"100_struct_4104.hex", []Frame{wantFrame(100, 4104, make([]byte, 4099))}, io.EOF, nil},
	{"101_ip_reply.hex", []Frame{wantFrame(101, 59, []byte("13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20 \x00"))}, io.EOF,
		func() []byte { return protocolExample.AppendFrame(nil) }},
	{"102_data_request.hex", []Frame{wantFrame(102, 41, echoRequest)}, io.EOF,
		func() []byte { return AppendFrame(nil, TypeDataRequest, echoRequest) }},
	{"102_trailing_junk.hex", []Frame{wantFrame(102, 57, cat(echoRequest, junk16))}, io.EOF, nil},
	{"103_data_reply.hex", []Frame{wantFrame(103, 41, echoReply)}, io.EOF,
		func() []byte { return AppendFrame(nil, TypeDataReply, echoReply) }},
	{"104_heartbeat.hex", []Frame{wantFrame(104, 5, nil)}, io.EOF,
		func() []byte { return Heartbeat }},
	{"104_length_zero.hex", []Frame{wantFrame(104, 0, nil)}, io.EOF, nil},
	{"104_extra3.hex", []Frame{wantFrame(104, 8, mustHex("abcdef"))}, io.EOF, nil},
	{"104_struct_4104.hex", []Frame{wantFrame(104, 4104, make([]byte, 4099))}, io.EOF, nil},
	{"199_unsupported.hex", []Frame{wantFrame(199, 5, nil)}, io.EOF,
		func() []byte { return Unsupported }},
	{"200_encrypt_request.hex", []Frame{wantFrame(200, 5, nil)}, io.EOF, nil},
	{"session_stream.hex", []Frame{
		wantFrame(100, 0, nil),
		wantFrame(104, 8, mustHex("abcdef")),
		wantFrame(102, 57, cat(echoRequest, junk16)),
		wantFrame(104, 0, nil),
	}, io.EOF, nil},
	{"incompatible_8byte_be.hex", nil, &FrameTooLargeError{Length: 0x24000000}, nil},
}

func TestGolden(t *testing.T) {
	for _, tt := range goldenCases {
		t.Run(tt.file, func(t *testing.T) {
			wire := readGolden(t, tt.file)
			frames, err := decodeAll(bytes.NewReader(wire))
			if !sameErr(err, tt.err) {
				t.Fatalf("final error %v, want %v", err, tt.err)
			}
			checkFrames(t, frames, tt.frames)
			if tt.encode == nil {
				return
			}
			if got := tt.encode(); !bytes.Equal(got, wire) {
				t.Errorf("encoded\n%x\nwant\n%x", got, wire)
			}
		})
	}
}

func TestGoldenCasesCoverTestdata(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.hex"))
	if err != nil {
		t.Fatal(err)
	}
	listed := make(map[string]bool)
	for _, tt := range goldenCases {
		listed[tt.file] = true
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s has no entry in goldenCases", f)
		}
	}
	if len(files) != len(listed) {
		t.Errorf("%d vectors in testdata, %d in goldenCases", len(files), len(listed))
	}
}
