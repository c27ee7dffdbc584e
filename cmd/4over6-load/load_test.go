package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
)

func TestOptionsRefuseNonDocumentationAddresses(t *testing.T) {
	for _, args := range [][]string{
		{"-server", "[2001:4860::1]:5678"},
		{"-server", "[2001:db8::1]:5678", "-packets", "10", "-target", "8.8.8.8:53"},
		{"-sink", "10.0.0.1:9000"},
		{"-server", "[2001:db8::1]:5678,[2001:4860::1]:5678"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil || !strings.Contains(err.Error(), "documentation") {
			t.Errorf("%v: err = %v, want a refusal naming documentation addresses", args, err)
		}
	}
	if _, err := parseOptions([]string{"-server", "[2001:db8:1::1]:5678", "-packets", "10", "-target", "198.51.100.2:9"}, io.Discard); err != nil {
		t.Errorf("documentation addresses refused: %v", err)
	}
}

func TestOptionsBounds(t *testing.T) {
	for _, args := range [][]string{
		{"-server", "[::1]:1", "-n", "0"},
		{"-server", "[::1]:1", "-duration", "0s"},
		{"-server", "[::1]:1", "-duration", "2h"},
		{"-server", "[::1]:1", "-size", "20"},
		{"-server", "[::1]:1", "-concurrency", "0"},
		{"-n", "5"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestParseSources(t *testing.T) {
	got, err := parseSources("2001:db8:1::ffe-2001:db8:1::1001,2001:db8:2::1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"2001:db8:1::ffe", "2001:db8:1::fff", "2001:db8:1::1000", "2001:db8:1::1001", "2001:db8:2::1"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"2001:db8::2-2001:db8::1", "192.0.2.1-2001:db8::1", "::-ffff::", "x"} {
		if _, err := parseSources(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// onesSum is the folded ones'-complement sum of b's 16-bit words, written
// apart from the shared checksum package so the test checks it: a header
// with a valid checksum sums to 0xffff.
func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestUDPFrameIsAValidPacket(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.7")
	dst := netip.MustParseAddrPort("198.51.100.2:9000")
	f := newUDPFrame(src, 20001, dst, 1400)
	for i := range 3 {
		frame := f.next()
		if got := binary.LittleEndian.Uint32(frame); got != 1405 || frame[4] != wire.TypeDataRequest {
			t.Fatalf("header: length %d type %d", got, frame[4])
		}
		pkt, s, d, err := wire.ParseIPv4(frame[wire.HeaderLen:])
		if err != nil || s != src || d != dst.Addr() || len(pkt) != 1400 {
			t.Fatalf("ParseIPv4: %v %v %v %d", err, s, d, len(pkt))
		}
		if onesSum(pkt[:20]) != 0xffff {
			t.Errorf("packet %d: header checksum does not verify", i)
		}
		if id := binary.BigEndian.Uint16(pkt[4:]); id != uint16(i+1) {
			t.Errorf("packet %d: IP ID %d", i, id)
		}
		if port := binary.BigEndian.Uint16(pkt[22:]); port != 9000 {
			t.Errorf("destination port %d", port)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(d)
	if p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 || p.Mean != 50.5 {
		t.Errorf("got %+v", p)
	}
	if p := percentiles(nil); p != (latencies{}) {
		t.Errorf("empty: %+v", p)
	}
}

// fakeServer speaks just enough 4over6 on loopback: 101 for a 100, a
// heartbeat right after it, and every 102 echoed back as a 103.
type fakeServer struct {
	ln        net.Listener
	next      atomic.Uint32
	heartbeat atomic.Uint64
	data      atomic.Uint64
	wg        sync.WaitGroup
	refuse    int32 // connections numbered below this are closed at once
	accepted  atomic.Int32
}

func startFake(t *testing.T, refuse int32) *fakeServer {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	f := &fakeServer{ln: ln, refuse: refuse}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeServer) serve(c net.Conn) {
	defer c.Close()
	if f.accepted.Add(1) <= f.refuse {
		return
	}
	dec := wire.NewDecoder(c)
	defer dec.Release()
	for {
		fr, err := dec.Next()
		if err != nil {
			return
		}
		switch fr.Type {
		case wire.TypeIPRequest:
			n := f.next.Add(1)
			reply := wire.IPReply{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(n + 1)})}
			out := reply.AppendFrame(nil)
			out = append(out, wire.Heartbeat...)
			_, _ = c.Write(out)
		case wire.TypeHeartbeat:
			f.heartbeat.Add(1)
		case wire.TypeDataRequest:
			f.data.Add(1)
			_, _ = c.Write(wire.AppendFrame(nil, wire.TypeDataReply, fr.Payload))
		}
	}
}

// runReport runs the load generator with args (which ask for -json) and
// returns its report; any exit but 0 fails the test.
func runReport(t *testing.T, args []string) loadReport {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	var r loadReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	return r
}

func TestLoadAgainstFakeServer(t *testing.T) {
	f := startFake(t, 0)
	args := []string{"-server", f.ln.Addr().String(), "-n", "20", "-concurrency", "4", "-duration", "700ms",
		"-heartbeat", "100ms", "-packets", "200", "-target", "198.51.100.2:9000", "-size", "100", "-json", "-quiet"}
	r := runReport(t, args)
	if r.Established != 20 || r.Failed != 0 || r.Lost != 0 {
		t.Errorf("report %+v", r)
	}
	if r.SetupRate <= 0 || r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 {
		t.Errorf("setup numbers %+v", r)
	}
	if r.HBSent == 0 || f.heartbeat.Load() == 0 || r.HBReceived < 20 {
		t.Errorf("heartbeats: sent %d (server saw %d), received %d", r.HBSent, f.heartbeat.Load(), r.HBReceived)
	}
	// 20 sessions at 200 packets/s for 0.7 s: about 2,800 packets.
	if r.PacketsSent < 1000 || f.data.Load() != r.PacketsSent || r.DataReceived != r.PacketsSent {
		t.Errorf("packets: sent %d, server got %d, echoed back %d", r.PacketsSent, f.data.Load(), r.DataReceived)
	}
}

// TestLoadSpreadsOverServers gives -server two servers: session i goes to
// the (i mod 2)th, so each serves half of them, and the report counts all.
func TestLoadSpreadsOverServers(t *testing.T) {
	a, b := startFake(t, 0), startFake(t, 0)
	args := []string{"-server", a.ln.Addr().String() + "," + b.ln.Addr().String(), "-n", "11", "-concurrency", "3",
		"-duration", "50ms", "-json", "-quiet"}
	r := runReport(t, args)
	if r.Established != 11 || a.next.Load() != 6 || b.next.Load() != 5 {
		t.Errorf("established %d; first server set up %d (want 6), second %d (want 5)", r.Established, a.next.Load(), b.next.Load())
	}
	if _, err := parseOptions([]string{"-server", a.ln.Addr().String() + ",x"}, io.Discard); err == nil {
		t.Error("a -server list with a malformed entry was accepted")
	}
}

func TestLoadCountsFailuresAndStops(t *testing.T) {
	f := startFake(t, 3)
	start := time.Now()
	args := []string{"-server", f.ln.Addr().String(), "-n", "10", "-rate", "200", "-duration", "100ms", "-json", "-quiet"}
	var out bytes.Buffer
	if code := run(args, &out, io.Discard); code != 1 {
		t.Errorf("exit %d with failed sessions, want 1", code)
	}
	var r loadReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Established != 7 || r.Failed != 3 || r.Failures["handshake: closed by server"]+r.Failures["handshake: connection reset"] != 3 {
		t.Errorf("report %+v", r)
	}
	// 10 connects at 200/s take 45 ms; the whole run must stay short.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("run took %v", d)
	}
}

// TestSinkEchoes sends five datagrams one at a time and checks that the
// sink counted and echoed exactly those. It depends on no timing: the sink
// runs until the test cancels it after the fifth echo (its duration is only
// a backstop), and a datagram sent before the sink's goroutine has bound the
// port is refused by the kernel (ECONNREFUSED on the connected socket), so
// it never reached the sink and is sent again; anything the sink did receive
// is in its counts, which must be exactly 5.
func TestSinkEchoes(t *testing.T) {
	o := &options{sink: netip.MustParseAddrPort("127.0.0.1:0"), duration: time.Minute, echo: true}
	// Pick a free port first: the sink binds the exact address it is given.
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	o.sink = probe.LocalAddr().(*net.UDPAddr).AddrPort()
	probe.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *sinkReport, 1)
	go func() {
		r, err := runSink(ctx, o)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(o.sink))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 100)
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 5; {
		if _, err := c.Write([]byte("ping")); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("write %d: %v", i, err)
		}
		_ = c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED) && i == 0:
			continue // the sink is not bound yet: this one never reached it
		case err != nil:
			t.Fatalf("echo %d: %v", i, err)
		case string(buf[:n]) != "ping":
			t.Fatalf("echo %d = %q, want %q", i, buf[:n], "ping")
		}
		i++
	}
	cancel()
	r := <-done
	if r == nil || r.Packets != 5 || r.Echoed != 5 || r.Sources != 1 {
		t.Errorf("sink %+v, want 5 packets from 1 source, all echoed", r)
	}
}
