package main

// Reliability tests of the real 4over6d binary (issue #13): a slow reader
// under a data flood, a flood of control frames, and a service actor that
// keeps failing. The engine tests in actors/ cover the same cases against
// the in-memory TUN; these check that the binary, with its real sockets,
// TUN, nftables table and exit code, behaves the same way. They use the
// topology, server and raw client of e2e_linux_test.go.
//
// Every pass criterion is an event (a marker packet arriving, a counter
// reaching the number of frames sent, the process exiting); timeouts only
// bound how long a broken server is waited for.

import (
	"bufio"
	"bytes"
	bin "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/4over6d/4over6d/tun/tuntest"
	"golang.org/x/sys/unix"
)

// relWait bounds the waits of these tests for a server that is busy with
// a flood on a loaded 2-core machine: long enough never to decide a pass,
// short enough that a broken server fails the test in reasonable time.
const relWait = 30 * time.Second

// adminAddr is where the harness's servers serve the admin endpoint (the
// default, on the server namespace's loopback).
const adminAddr = "127.0.0.1:9604"

// plainBinary is 4over6d built without the race detector. A test that
// measures the server's memory uses it: the race runtime's own allocations
// (shadow memory, sync objects, traces) add tens of MiB that vary from run
// to run and hide what the server itself keeps.
func plainBinary(t *testing.T) string { return plainBuild.get(t) }

// pid returns the process ID of the running 4over6d. `ip netns exec`
// execs the binary, so the started process is the server itself; the check
// keeps a harness change from making the test sample the wrong process.
func (s *server) pid(t *testing.T) int {
	t.Helper()
	pid := s.cmd.Process.Pid
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "4over6d" {
		t.Fatalf("process %d is %q (%v), not 4over6d", pid, comm, err)
	}
	return pid
}

// vmRSS returns the resident set size of a process in bytes.
func vmRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS line in /proc/" + strconv.Itoa(pid) + "/status")
}

// rssSampler records the peak resident set size of a process, sampled
// every few milliseconds from its start until stop.
type rssSampler struct {
	peak atomic.Int64
	quit chan struct{}
	done chan struct{}
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := vmRSS(pid); err == nil && rss > s.peak.Load() {
				s.peak.Store(rss)
			}
			select {
			case <-s.quit:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the peak.
func (s *rssSampler) stop() int64 {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.done
	return s.peak.Load()
}

// tryAdmin is adminGet for a server that may be gone: it sends one HTTP
// request to the admin endpoint and returns the status code and body, or
// the error instead of failing the test.
func (tp *topology) tryAdmin(method, path string) (status int, body string, err error) {
	return tryAdminIn(tp.srv, method, path)
}

// tryAdminIn is tryAdmin for the server running in ns.
func tryAdminIn(ns *netnstest.NS, method, path string) (status int, body string, err error) {
	var resp []byte
	err = ns.Do(func() error {
		conn, err := net.DialTimeout("tcp", adminAddr, e2eWait)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(e2eWait))
		if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.0\r\nHost: %s\r\n\r\n", method, path, adminAddr); err != nil {
			return err
		}
		resp, err = io.ReadAll(conn)
		return err
	})
	if err != nil {
		return 0, "", err
	}
	head, body, _ := strings.Cut(string(resp), "\r\n\r\n")
	fields := strings.Fields(head)
	if len(fields) < 2 {
		return 0, "", fmt.Errorf("%s %s: malformed response %q", method, path, resp)
	}
	if status, err = strconv.Atoi(fields[1]); err != nil {
		return 0, "", fmt.Errorf("%s %s: malformed status line in %q", method, path, resp)
	}
	return status, body, nil
}

// metricValue returns the value of one series, such as
// `fourover6d_frames_total{type="104"}`, from a Prometheus text scrape.
func metricValue(scrape, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(scrape))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// background runs f, which reads from c, on its own goroutine until the
// test ends: the cleanup closes the connection and waits for f to return
// before the harness's own cleanup releases c's decoder.
func (c *rawClient) background(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	t.Cleanup(func() {
		_ = c.conn.Close()
		<-done
	})
}

// Flood packets are UDP datagrams from A to B whose payload starts with a
// sequence number and a kind byte; the rest is a pattern derived from the
// sequence number, so that a packet the server mangled (beyond what the
// checksums catch) or spliced from two others is noticed.
const (
	floodPort    = 4646
	floodPktLen  = 1400 // IPv4 total length
	floodPayload = floodPktLen - 20 - 8
	kindData     = 0
	kindEnd      = 1 // the flood is over: B stops counting
)

func floodPacket(src, dst netip.Addr, seq uint64, kind byte) []byte {
	payload := make([]byte, floodPayload)
	bin.BigEndian.PutUint64(payload, seq)
	payload[8] = kind
	for i := 9; i < len(payload); i++ {
		payload[i] = byte(seq) ^ byte(i)
	}
	return tuntest.UDP(netip.AddrPortFrom(src, floodPort), netip.AddrPortFrom(dst, floodPort), payload)
}

// checkFloodPacket verifies that a 103 payload is one of A's flood packets,
// intact, and returns its sequence number and kind.
func checkFloodPacket(pkt []byte, src, dst netip.Addr) (seq uint64, kind byte, err error) {
	if len(pkt) != floodPktLen {
		return 0, 0, fmt.Errorf("%d-byte packet, want %d", len(pkt), floodPktLen)
	}
	s, err := tuntest.Parse(pkt)
	if err != nil {
		return 0, 0, err
	}
	if s.Proto != 17 || s.Src != src || s.Dst != dst || s.SrcPort != floodPort || s.DstPort != floodPort || len(s.Payload) != floodPayload {
		return 0, 0, fmt.Errorf("packet %+v is not one of the flood's", s)
	}
	seq, kind = bin.BigEndian.Uint64(s.Payload), s.Payload[8]
	for i := 9; i < len(s.Payload); i++ {
		if s.Payload[i] != byte(seq)^byte(i) {
			return 0, 0, fmt.Errorf("packet %d: payload byte %d is %#x, want %#x", seq, i, s.Payload[i], byte(seq)^byte(i))
		}
	}
	return seq, kind, nil
}

// slowRead is what B's reader saw of the flood.
type slowRead struct {
	heartbeats int         // 104 frames from the flood's start to its end marker
	beatsAt    []time.Time // when each of them arrived
	packets    int         // flood packets, the end marker excluded
	lastSeq    uint64      // of the last data packet
	err        error       // a malformed or unexpected frame, or a read error
}

// TestHeartbeatsReachASlowReaderUnderFlood checks that a client whose
// queue towards it is full still gets every heartbeat. Heartbeats are how a
// client tells a live server from a dead link (4over6c reconnects after
// -timeout without one), so a server that drops them behind data makes busy
// clients reconnect in a loop. A floods B with 1400-byte packets faster than
// B reads, so B's server-side queue stays full and the server drops data
// for it; B counts the heartbeats that arrive between the flood's first
// packet and an end marker A sends after the flood. Each heartbeat sent
// during the flood is queued before the marker, so B must have seen them
// all, whatever the delay behind the data already in the socket buffers
// (seconds: they hold megabytes, which B reads slowly). A, which reads at once,
// counts its own heartbeats over the same span: on a loaded machine the
// heartbeat timers run a little late, and B is held to what the server
// actually sent, not only to the nominal schedule.
func TestHeartbeatsReachASlowReaderUnderFlood(t *testing.T) {
	// Sessions start a few milliseconds before the flood, so their ticks
	// fall at 2, 4, ... 14 s into it: seven ticks, all a second clear of
	// its end, where a tick could race the end marker. The bound of six
	// leaves room for one more lost to timers that run late on a loaded
	// machine (with 1 s and twelve ticks, runs came within one of the
	// bound), while a server that drops heartbeats behind data delivers
	// two or three.
	const (
		heartbeat = 2 * time.Second
		flood     = 15 * time.Second
		perWrite  = 32 // packets per write: A sends as fast as it can
	)
	tp := newTopology(t)
	tp.startServer(t, "-heartbeat", heartbeat.String())
	a, b := tp.dialFrom(t, cliV6), tp.dialFrom(t, cliV6b)
	a.handshake()
	b.handshake()
	// A reads its own downlink at once, so A never blocks, and counts its
	// heartbeats over the same span as B: A's queue is empty, so A sees
	// every heartbeat its session sends, which calibrates the count for a
	// server whose timers run late on a loaded machine.
	var flooding, ended atomic.Bool
	var controlBeats atomic.Int64
	_ = a.conn.SetReadDeadline(time.Time{})
	a.background(t, func() {
		for {
			f, err := a.dec.Next()
			if err != nil {
				return
			}
			if f.Type == wire.TypeHeartbeat && flooding.Load() && !ended.Load() {
				controlBeats.Add(1)
			}
		}
	})

	read := make(chan slowRead, 1)
	b.background(t, func() {
		var r slowRead
		defer func() { read <- r }()
		for n := 1; ; n++ {
			_ = b.conn.SetReadDeadline(time.Now().Add(relWait))
			f, err := b.dec.Next()
			if err != nil {
				r.err = fmt.Errorf("reading frame %d: %w", n, err)
				return
			}
			switch f.Type {
			case wire.TypeHeartbeat:
				if len(f.Payload) != 0 {
					r.err = fmt.Errorf("frame %d: heartbeat with a %d-byte payload", n, len(f.Payload))
					return
				}
				if flooding.Load() {
					r.heartbeats++
					r.beatsAt = append(r.beatsAt, time.Now())
				}
			case wire.TypeDataReply:
				seq, kind, err := checkFloodPacket(f.Payload, a.addr, b.addr)
				if err != nil {
					r.err = fmt.Errorf("frame %d: %w", n, err)
					return
				}
				if kind == kindEnd {
					ended.Store(true)
					return
				}
				// One flow through one session: dropped packets leave
				// gaps, but nothing may come back out of order or twice.
				if seq <= r.lastSeq {
					r.err = fmt.Errorf("frame %d: packet %d after packet %d", n, seq, r.lastSeq)
					return
				}
				r.lastSeq = seq
				r.packets++
			default:
				r.err = fmt.Errorf("frame %d: unexpected type %d (%d bytes)", n, f.Type, f.Length)
				return
			}
			// The slow reader: at most about 5 MB/s, well below what A sends.
			if n%4 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})

	var seq uint64
	buf := make([]byte, 0, perWrite*(wire.HeaderLen+floodPktLen))
	flooding.Store(true)
	start := time.Now()
	for time.Since(start) < flood {
		buf = buf[:0]
		for range perWrite {
			seq++
			buf = wire.AppendFrame(buf, wire.TypeDataRequest, floodPacket(a.addr, b.addr, seq, kindData))
		}
		_ = a.conn.SetWriteDeadline(time.Now().Add(relWait))
		if _, err := a.conn.Write(buf); err != nil {
			t.Fatalf("flood write after %d packets: %v", seq, err)
		}
	}
	window := time.Since(start)
	// The marker may be dropped like any packet while B's queue is still
	// full, so A repeats it until B has seen one.
	var r slowRead
	deadline := time.After(relWait)
	marker := wire.AppendFrame(nil, wire.TypeDataRequest, floodPacket(a.addr, b.addr, seq+1, kindEnd))
	for sent := false; !sent; {
		_ = a.conn.SetWriteDeadline(time.Now().Add(relWait))
		if _, err := a.conn.Write(marker); err != nil {
			t.Fatalf("end marker: %v", err)
		}
		select {
		case r = <-read:
			sent = true
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("B saw no end marker within %v of the flood's end", relWait)
		}
	}
	if r.err != nil {
		t.Fatalf("B's reader after %d packets and %d heartbeats: %v", r.packets, r.heartbeats, r.err)
	}
	// The flood must have overflowed B's queue, or it proved nothing.
	m := tp.adminGet(t, "/metrics")
	drops, _ := metricValue(m, `fourover6d_drops_total{reason="queue_full"}`)
	t.Logf("flood: %v, %d packets sent, %d received by B, %.0f dropped as queue_full, %d heartbeats (A: %d)", window.Round(time.Millisecond), seq, r.packets, drops, r.heartbeats, controlBeats.Load())
	if drops == 0 || r.packets == 0 {
		t.Fatalf("the flood did not fill B's queue (%.0f queue_full drops, %d of %d packets received): the reader is not slow enough", drops, r.packets, seq)
	}
	var arrived []string
	for _, at := range r.beatsAt {
		arrived = append(arrived, at.Sub(start).Round(10*time.Millisecond).String())
	}
	// B must have every heartbeat sent during the flood: as many as the
	// schedule gives, or as A got if the server's timers ran late, less
	// one for a timer late enough to miss the window.
	control := int(controlBeats.Load())
	if control < int(window/heartbeat)/2 {
		t.Fatalf("A, not flooded, received only %d heartbeats in %v with -heartbeat %v: the server's timers are far behind", control, window.Round(time.Millisecond), heartbeat)
	}
	if want := min(int(window/heartbeat), control) - 1; r.heartbeats < want {
		t.Fatalf("B received %d heartbeats during a %v flood with -heartbeat %v (A, not flooded, %d); want at least %d; they arrived at %v",
			r.heartbeats, window.Round(time.Millisecond), heartbeat, control, want, arrived)
	}
}

// controlFlood is what the flooding client managed to send.
type controlFlood struct {
	frames int64 // complete frames written, alternately 104 and 150
	err    error // why the flood ended early (the server closed the connection)
}

// floodControl writes 5-byte frames, alternately 104 and an unknown type
// (150), to conn for d, as fast as the connection takes them. A write cut
// by the deadline is completed, so every byte sent belongs to a whole frame.
func floodControl(conn net.Conn, d time.Duration) controlFlood {
	pair := append(wire.AppendFrame(nil, wire.TypeHeartbeat, nil), wire.AppendFrame(nil, 150, nil)...)
	chunk := bytes.Repeat(pair, 6554) // 64 KiB, whole pairs
	var total int64
	_ = conn.SetWriteDeadline(time.Now().Add(d))
	for {
		n, err := conn.Write(chunk)
		total += int64(n)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return controlFlood{frames: total / wire.HeaderLen, err: err}
		}
	}
	if part := total % wire.HeaderLen; part != 0 {
		at := total % int64(len(pair))
		_ = conn.SetWriteDeadline(time.Now().Add(relWait))
		n, err := conn.Write(pair[at : at+wire.HeaderLen-part])
		total += int64(n)
		if err != nil {
			return controlFlood{frames: total / wire.HeaderLen, err: err}
		}
	}
	return controlFlood{frames: total / wire.HeaderLen}
}

// unreadBytes returns how many bytes written to conn the server process
// pid has not read yet: those the client's kernel still holds (SIOCOUTQ)
// plus those waiting in the receive queue of the server's socket (from
// /proc/PID/net/tcp6, which shows the server's namespace). Zero means the
// server has read everything it was sent; open is false once the server
// has no socket for the connection any more.
func unreadBytes(pid int, conn net.Conn) (n int64, open bool, err error) {
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var outq int
	var ioctlErr error
	if err := raw.Control(func(fd uintptr) { outq, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, false, err
	}
	if ioctlErr != nil {
		return 0, false, fmt.Errorf("SIOCOUTQ: %w", ioctlErr)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp6", pid))
	if err != nil {
		return 0, false, err
	}
	local := fmt.Sprintf(":%04X", conn.RemoteAddr().(*net.TCPAddr).Port)
	remote := fmt.Sprintf(":%04X", conn.LocalAddr().(*net.TCPAddr).Port)
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], local) || !strings.HasSuffix(f[2], remote) {
			continue
		}
		_, rxHex, _ := strings.Cut(f[4], ":")
		rx, err := strconv.ParseInt(rxHex, 16, 64)
		return int64(outq) + rx, true, err
	}
	return 0, false, nil
}

// pingOnce sends one echo request to dst and waits up to relWait for its
// reply, skipping heartbeats and other packets.
func (c *rawClient) pingOnce(dst netip.Addr, seq uint16) error {
	if _, err := c.conn.Write(wire.AppendFrame(nil, wire.TypeDataRequest, tuntest.Ping(c.addr, dst, 0x6464, seq, []byte("under flood")))); err != nil {
		return fmt.Errorf("echo request %d: %w", seq, err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(relWait))
	for {
		f, err := c.dec.Next()
		if err != nil {
			return fmt.Errorf("waiting for echo reply %d: %w", seq, err)
		}
		if f.Type != wire.TypeDataReply {
			continue
		}
		if s, err := tuntest.Parse(f.Payload); err == nil && s.Proto == 1 && s.ICMPType == 0 && s.Src == dst && s.Seq == seq {
			return nil
		}
	}
}

// TestControlFloodIsBounded checks that a client streaming control frames
// (heartbeats and unknown types, each a 5-byte frame the server only counts)
// cannot make the server's memory grow without bound or starve other
// clients: such frames are cheap to send at line rate, so a server that
// queues work for each of them is a memory exhaustion attack from one
// connection. The frames must still be counted, by type, in
// fourover6d_frames_total.
func TestControlFloodIsBounded(t *testing.T) {
	const (
		flood     = 5 * time.Second
		maxGrowth = 64 << 20
		pings     = 10
	)
	tp := newTopology(t)
	s := tp.startBinary(t, plainBinary(t), []string{"-dns", e2eDNS})
	pid := s.pid(t)
	flooder, pinger := tp.dialFrom(t, cliV6), tp.dialFrom(t, cliV6b)
	flooder.handshake()
	pinger.handshake()
	if err := pinger.pingOnce(tunAddr, 0); err != nil { // warm the path up before the baseline
		t.Fatal(err)
	}
	base, err := vmRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, open, err := unreadBytes(pid, flooder.conn); err != nil || !open {
		t.Fatalf("cannot find the flooding connection in /proc/%d/net/tcp6 (%v)", pid, err)
	}
	rss := sampleRSS(pid)
	defer rss.stop()
	_ = flooder.conn.SetReadDeadline(time.Time{})
	flooder.background(t, func() { _, _ = io.Copy(io.Discard, flooder.conn) })
	flooded := make(chan controlFlood, 1)
	go func() { flooded <- floodControl(flooder.conn, flood) }()

	// The other client keeps working: every echo is answered, during the
	// flood and while the server works through what it read.
	for seq := uint16(1); seq <= pings; seq++ {
		if err := pinger.pingOnce(tunAddr, seq); err != nil {
			t.Errorf("second client during the control flood: %v", err)
			break
		}
		time.Sleep(flood / pings)
	}
	f := <-flooded
	t.Logf("control flood: %d frames sent in %v (%v)", f.frames, flood, f.err)

	// Wait until the server has read every byte it was sent (or closed the
	// connection): until then it could still take memory for them. The
	// RSS peak covers that whole time.
	for deadline := time.Now().Add(relWait); ; {
		n, open, err := unreadBytes(pid, flooder.conn)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 || !open { // a closed socket is read no more
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server left %d bytes of the control flood unread for %v", n, relWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Then until it has counted every frame, or, if it closed the
	// flooding connection, at least half of them.
	want104, wantUnknown := (f.frames+1)/2, f.frames/2
	var got104, gotUnknown float64
	var m string
	deadline := time.Now().Add(relWait)
	for {
		m = tp.adminGet(t, "/metrics")
		if !strings.Contains(m, "fourover6d_frames_total{") {
			// The RSS check below still runs: the peak so far covers
			// the flood.
			t.Errorf("/metrics has no fourover6d_frames_total series; the fourover6d_ series are:\n%s", fourover6dSeries(m))
			break
		}
		got104, _ = metricValue(m, `fourover6d_frames_total{type="104"}`)
		gotUnknown, _ = metricValue(m, `fourover6d_frames_total{type="unknown"}`)
		if f.err == nil && got104 >= float64(want104) && gotUnknown >= float64(wantUnknown) ||
			f.err != nil && got104+gotUnknown >= float64(f.frames/2) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v the server had counted %.0f of type 104 and %.0f unknown frames of the %d+%d sent (flood ended by %v)",
				relWait, got104, gotUnknown, want104, wantUnknown, f.err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := pinger.pingOnce(tunAddr, pings+1); err != nil {
		t.Errorf("second client after the control flood: %v", err)
	}
	peak := rss.stop()
	t.Logf("RSS %.1f MiB before, peak %.1f MiB", float64(base)/(1<<20), float64(peak)/(1<<20))
	if peak-base >= maxGrowth {
		t.Errorf("RSS grew by %.1f MiB during a %v control flood (%.1f -> %.1f MiB); want < %d MiB",
			float64(peak-base)/(1<<20), flood, float64(base)/(1<<20), float64(peak)/(1<<20), maxGrowth>>20)
	}
	if got104 == 0 || gotUnknown == 0 {
		t.Errorf("frames_total: type 104 %.0f, unknown %.0f; want both counted", got104, gotUnknown)
	}
	if f.err == nil && (got104 != float64(want104) || gotUnknown != float64(wantUnknown)) {
		t.Errorf("frames_total: type 104 %.0f, unknown %.0f; want exactly the %d and %d sent", got104, gotUnknown, want104, wantUnknown)
	}
	// The handshakes and the pings are counted too: two 100s, and one 102
	// per echo request.
	if v, _ := metricValue(m, `fourover6d_frames_total{type="100"}`); v != 2 {
		t.Errorf(`frames_total{type="100"} = %v, want 2`, v)
	}
	if v, _ := metricValue(m, `fourover6d_frames_total{type="102"}`); v < 1 {
		t.Errorf(`frames_total{type="102"} = %v, want the echo requests counted`, v)
	}
}

// fourover6dSeries returns the server's own series of a scrape, without
// the Go runtime and process ones, for failure messages.
func fourover6dSeries(scrape string) string {
	var out []string
	for line := range strings.SplitSeq(scrape, "\n") {
		if strings.HasPrefix(line, "fourover6d_") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// exitStatus turns the result of cmd.Wait into an exit code, or -1 with a
// description when the process did not exit normally.
func exitStatus(err error) (int, string) {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, "exit status 0"
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1, "killed by " + ws.Signal().String()
		}
		return exit.ExitCode(), err.Error()
	}
	return -1, err.Error()
}

// gaveUpStatus is the documented exit code of a server whose service actor
// exceeded its restart intensity. The test spells the contract out rather
// than use main.go's constant, so that changing the code alone cannot
// change what is checked.
const gaveUpStatus = 3

// TestServiceActorGivesUpAndProcessExits checks what happens when a service
// actor (pool, Router, TUN actor) keeps failing: past its restart intensity
// (10 restarts in 10 s) the server cannot serve any more, so it must not
// linger half-dead, answering /healthz while no packet moves. It must exit
// on its own with status 3, so that systemd or Docker restarts it, after
// the same cleanup as a signalled shutdown: the TUN device and the nftables
// table removed, and the leases saved for the restarted server.
func TestServiceActorGivesUpAndProcessExits(t *testing.T) {
	const (
		early = 3  // panics within the intensity: the server recovers
		burst = 12 // more panics at once: past the intensity
	)
	for _, kind := range []string{"router", "pool", "tun"} {
		t.Run(kind, func(t *testing.T) {
			tp := newTopology(t)
			leases := filepath.Join(t.TempDir(), "leases.json")
			const tunName = "e2egiveup0"
			s := tp.startServer(t, "-debug-faults", "-lease-file", leases, "-tun", tunName)
			c := tp.dial(t)
			c.handshake()

			for range early {
				if status, body, err := tp.tryAdmin("POST", "/debug/panic?actor="+kind); status != 200 {
					t.Fatalf("panic %s: %d %q %v", kind, status, body, err)
				}
			}
			// Within the intensity the actor is restarted and the
			// server stays up and healthy.
			deadline := time.Now().Add(relWait)
			for {
				status, body, err := tp.tryAdmin("GET", "/healthz")
				if status == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("/healthz after %d panics of %s: %d %q %v; want 200 once it is restarted", early, kind, status, body, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			select {
			case err := <-s.done:
				_, how := exitStatus(err)
				t.Fatalf("4over6d exited (%s) after only %d panics of %s, within its restart intensity", how, early, kind)
			default:
			}

			// The server may die while the burst is being sent: the
			// requests that fail then are expected.
			var answered int
			for range burst {
				if status, _, err := tp.tryAdmin("POST", "/debug/panic?actor="+kind); err == nil && status == 200 {
					answered++
				}
			}
			select {
			case err := <-s.done:
				if code, how := exitStatus(err); code != gaveUpStatus {
					t.Fatalf("4over6d exited with %s after %d panics of %s; want exit status %d", how, early+burst, kind, gaveUpStatus)
				}
			case <-time.After(relWait):
				status, body, err := tp.tryAdmin("GET", "/healthz")
				t.Fatalf("4over6d still running %v after %d panics of %s (%d answered); /healthz: %d %q %v",
					relWait, early+burst, kind, early+answered, status, strings.TrimSpace(body), err)
			}

			if status, _, err := tp.tryAdmin("GET", "/healthz"); err == nil {
				t.Errorf("/healthz answered %d after the server exited", status)
			}
			if _, err := tp.srv.Netlink().LinkByName(tunName); err == nil {
				t.Errorf("TUN device %s still exists after the server gave up", tunName)
			}
			if out := tp.srv.Run(t, "nft", "list", "tables"); strings.Contains(out, natTable) {
				t.Errorf("nftables table %s left behind after the server gave up: %q", natTable, out)
			}
			checkLeaseSaved(t, leases, cliV6, c.addr)
			_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
			if _, err := io.ReadAll(c.conn); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the client's connection stayed open after the server exited")
			}
		})
	}
}

// checkLeaseSaved fails the test unless the lease file records addr for
// client. It reads the file's JSON itself, as an operator or a restarted
// server would, rather than through the actors package.
func checkLeaseSaved(t *testing.T, path string, client, addr netip.Addr) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("lease file: %v", err)
		return
	}
	var lf struct {
		Leases []struct {
			Client netip.Addr `json:"client"`
			Addr   netip.Addr `json:"addr"`
		} `json:"leases"`
	}
	if err := json.Unmarshal(data, &lf); err != nil {
		t.Errorf("lease file %q: %v", data, err)
		return
	}
	for _, l := range lf.Leases {
		if l.Client == client && l.Addr == addr {
			return
		}
	}
	t.Errorf("lease file lacks %v for %v: %s", addr, client, data)
}
