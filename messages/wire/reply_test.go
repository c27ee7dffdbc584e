package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestIPReplyFormat(t *testing.T) {
	tests := []struct {
		name  string
		reply IPReply
		want  string
	}{
		{"protocol example", protocolExample, "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20 \x00"},
		{"zero fields become 0.0.0.0", IPReply{Addr: netip.MustParseAddr("10.0.0.2")}, "10.0.0.2 0.0.0.0 0.0.0.0 0.0.0.0 0.0.0.0 \x00"},
		{"mapped addresses are unmapped", IPReply{
			Addr:  netip.MustParseAddr("::ffff:13.8.0.9"),
			Route: netip.MustParseAddr("13.8.0.0"),
			DNS:   [3]netip.Addr{netip.MustParseAddr("::ffff:1.1.1.1"), netip.MustParseAddr("9.9.9.9"), netip.MustParseAddr("255.255.255.255")},
		}, "13.8.0.9 13.8.0.0 1.1.1.1 9.9.9.9 255.255.255.255 \x00"},
		{"IPv6 is not sent", IPReply{Addr: netip.MustParseAddr("13.8.0.2"), Route: netip.MustParseAddr("2001:db8::1")}, "13.8.0.2 0.0.0.0 0.0.0.0 0.0.0.0 0.0.0.0 \x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.reply.Format()
			if string(got) != tt.want {
				t.Errorf("Format() = %q, want %q", got, tt.want)
			}
			frame := tt.reply.AppendFrame([]byte("prefix"))
			if want := AppendFrame([]byte("prefix"), TypeIPReply, []byte(tt.want)); !bytes.Equal(frame, want) {
				t.Errorf("AppendFrame = %x, want %x", frame, want)
			}
		})
	}
}

func TestIPReplyFormatFitsItsBuffer(t *testing.T) {
	widest := netip.MustParseAddr("255.255.255.255")
	r := IPReply{Addr: widest, Route: widest, DNS: [3]netip.Addr{widest, widest, widest}}
	if got := r.Format(); len(got) != maxIPReplyLen || cap(got) != maxIPReplyLen {
		t.Errorf("widest reply: len %d cap %d, want both %d", len(got), cap(got), maxIPReplyLen)
	}
}

func TestParseIPReply(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    IPReply
		errText string // empty when the payload must parse
	}{
		{"canonical", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20 \x00", protocolExample, ""},
		{"no trailing space or NUL", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20", protocolExample, ""},
		{"NUL without space", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20\x00", protocolExample, ""},
		{"trailing newline", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20\n", protocolExample, ""},
		{"trailing CRLF and NUL", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20\r\n\x00", protocolExample, ""},
		{"extra spaces", "  13.8.0.2  0.0.0.0 202.38.120.242   8.8.8.8 202.106.0.20   \x00", protocolExample, ""},
		{"junk after the NUL", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20 \x00\x00garbage 1.2.3.4 \xff", protocolExample, ""},
		{"empty", "", IPReply{}, "0 fields"},
		{"only a NUL", "\x00", IPReply{}, "0 fields"},
		{"four fields", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 \x00", IPReply{}, "4 fields"},
		{"six fields", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20 1.1.1.1 \x00", IPReply{}, "6 fields"},
		{"fields cut by a NUL", "13.8.0.2 0.0.0.0\x00202.38.120.242 8.8.8.8 202.106.0.20 ", IPReply{}, "2 fields"},
		{"IPv6 address", "2001:db8::2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20 \x00", IPReply{}, `address field "2001:db8::2"`},
		{"mapped address", "13.8.0.2 ::ffff:0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20 \x00", IPReply{}, "route field"},
		{"hostname", "13.8.0.2 0.0.0.0 dns.example 8.8.8.8 202.106.0.20 \x00", IPReply{}, `dns1 field "dns.example"`},
		{"octet out of range", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.256 202.106.0.20 \x00", IPReply{}, "dns2 field"},
		{"leading zeros", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.020 \x00", IPReply{}, "dns3 field"},
		{"long junk is clipped", "13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 " + strings.Repeat("x", 1000), IPReply{}, `"` + strings.Repeat("x", 32) + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseIPReply([]byte(tt.payload))
			if tt.errText == "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrMalformedIPReply) || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("got error %v, want ErrMalformedIPReply mentioning %q", err, tt.errText)
			}
			if got != (IPReply{}) {
				t.Errorf("got %+v with an error, want the zero IPReply", got)
			}
		})
	}
}

func TestIPReplyRoundTrip(t *testing.T) {
	got, err := ParseIPReply(protocolExample.Format())
	if err != nil || got != protocolExample {
		t.Fatalf("ParseIPReply(Format()) = %+v, %v; want %+v", got, err, protocolExample)
	}
}
