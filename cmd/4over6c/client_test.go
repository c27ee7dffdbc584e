package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

func TestHandshakeSendsRequestAndIgnoresFramesBeforeReply(t *testing.T) {
	verifyNoLeaks(t)
	srv := newFakeServer(t)
	rc := startClient(t, srv, shortTimers())
	p := srv.accept(t)
	first := make([]byte, 5)
	_ = p.conn.SetReadDeadline(time.Now().Add(waitLong))
	if _, err := io.ReadFull(p.conn, first); err != nil || !bytes.Equal(first, []byte{5, 0, 0, 0, 100}) {
		t.Fatalf("first bytes = %x, %v; want the 5-byte address request 0500000064", first, err)
	}
	var before []byte
	before = append(before, wire.Heartbeat...)
	before = wire.AppendFrame(before, wire.TypeDataReply, tuntest.Ping(remoteAddr, leasedAddr, 1, 1, nil))
	p.write(append(before, testReply.AppendFrame(nil)...))
	if got := rc.net.awaitLease(t); got != testReply {
		t.Fatalf("lease = %+v, want %+v", got, testReply)
	}
	if n := len(rc.net.device().Written()); n != 0 {
		t.Errorf("%d packets reached the TUN before the address reply", n)
	}
	waitFor(t, func() bool { return rc.logs.count("msg=connected") == 1 }, "the connect line")
	if !strings.Contains(rc.logs.String(), "addr=192.0.2.2") {
		t.Errorf("connect line does not name the leased address:\n%s", rc.logs.String())
	}
}

func TestPacketsFlowBothWaysInOrder(t *testing.T) {
	verifyNoLeaks(t)
	const count = 300
	_, rc, p := leasedSession(t)
	dev := rc.net.device()

	for i := range count {
		dev.Inject(tuntest.Ping(leasedAddr, remoteAddr, 7, uint16(i), make([]byte, i)))
	}
	for i := range count {
		f := p.next(wire.TypeDataRequest)
		if want := tuntest.Ping(leasedAddr, remoteAddr, 7, uint16(i), make([]byte, i)); !bytes.Equal(f.Payload, want) {
			t.Fatalf("102 number %d carries %x, want %x", i, f.Payload, want)
		}
	}

	var burst []byte
	for i := range count {
		burst = wire.AppendFrame(burst, wire.TypeDataReply, tuntest.Pong(remoteAddr, leasedAddr, 7, uint16(i), make([]byte, i)))
	}
	p.write(burst)
	for i := range count {
		select {
		case got := <-dev.Written():
			if want := tuntest.Pong(remoteAddr, leasedAddr, 7, uint16(i), make([]byte, i)); !bytes.Equal(got, want) {
				t.Fatalf("TUN packet %d = %x, want %x", i, got, want)
			}
		case <-time.After(waitLong):
			t.Fatalf("only %d of %d packets reached the TUN", i, count)
		}
	}
}

func TestInvalidDataRepliesAreDroppedNotFatal(t *testing.T) {
	verifyNoLeaks(t)
	_, rc, p := leasedSession(t)
	pong := tuntest.Pong(remoteAddr, leasedAddr, 9, 1, []byte("after junk"))
	var frames []byte
	frames = wire.AppendFrame(frames, wire.TypeDataReply, []byte{0x60, 0, 0, 0})                         // IPv6
	frames = wire.AppendFrame(frames, wire.TypeDataReply, pong[:10])                                     // truncated
	frames = wire.AppendFrame(frames, wire.TypeDataReply, make([]byte, 0))                               // empty
	frames = wire.AppendFrame(frames, wire.TypeDataReply, append(bytes.Clone(pong), "trailing junk"...)) // trimmed
	frames = wire.AppendFrame(frames, wire.TypeIPReply, testReply.Format())                              // repeated reply
	p.write(frames)
	select {
	case got := <-rc.net.device().Written():
		if !bytes.Equal(got, pong) {
			t.Fatalf("TUN got %x, want the valid packet without its trailing junk %x", got, pong)
		}
	case <-time.After(waitLong):
		t.Fatal("valid packet after invalid ones never reached the TUN")
	}
	if rc.logs.count("msg=disconnected") != 0 {
		t.Fatalf("invalid packets ended the session:\n%s", rc.logs.String())
	}
}

// TestHeartbeatsSentEveryInterval checks the client's heartbeat schedule
// against what a ticker guarantees, not against gaps seen by the receiver:
// under load two heartbeats can arrive back to back (a delayed tick is
// followed by the next one on time), so a per-gap minimum is not a property
// of a correct client. What is: the k-th heartbeat cannot be sent before k
// intervals after the session started (start is taken before the 101 is
// written, so before the client's ticker exists), and a ticker does not
// drift, so the last one comes within a scheduling slack of its time.
// Heartbeats sent too often, or in a burst, arrive before their earliest
// possible time.
func TestHeartbeatsSentEveryInterval(t *testing.T) {
	verifyNoLeaks(t)
	const (
		interval = 50 * time.Millisecond
		beats    = 8
		slack    = time.Second // scheduling delay allowed for the last heartbeat
	)
	srv := newFakeServer(t)
	startClient(t, srv, sessionConfig{heartbeat: interval, timeout: 2 * time.Second, handshakeTimeout: time.Second})
	p := srv.accept(t)
	p.next(wire.TypeIPRequest)
	start := time.Now()
	p.write(testReply.AppendFrame(nil))
	arrivals := make([]time.Duration, 0, beats)
	for k := 1; k <= beats; k++ {
		p.next(wire.TypeHeartbeat)
		at := time.Since(start)
		arrivals = append(arrivals, at)
		if earliest := time.Duration(k) * interval; at < earliest {
			t.Fatalf("heartbeat %d arrived %v after the reply, before its earliest time %v (arrivals %v)", k, at, earliest, arrivals)
		}
	}
	if last, latest := arrivals[beats-1], beats*interval+slack; last > latest {
		t.Errorf("heartbeat %d arrived %v after the reply, want by %v (arrivals %v)", beats, last, latest, arrivals)
	}
}

// TestSilentServerIsDeadAndClientReconnects measures from just before the
// 101 is written: the client's liveness clock starts only once it has read
// the reply, so it cannot drop the server earlier than timeout after that
// instant, however the test goroutine is scheduled. (Measuring from after
// the write let a descheduled test see less than the timeout.)
func TestSilentServerIsDeadAndClientReconnects(t *testing.T) {
	verifyNoLeaks(t)
	const timeout = 300 * time.Millisecond
	srv := newFakeServer(t)
	rc := startClient(t, srv, sessionConfig{heartbeat: 100 * time.Millisecond, timeout: timeout, handshakeTimeout: time.Second})
	p := srv.accept(t)
	p.next(wire.TypeIPRequest)
	start := time.Now()
	p.write(testReply.AppendFrame(nil))
	p.awaitClose(waitLong)
	if took := time.Since(start); took < timeout || took > timeout+time.Second {
		t.Errorf("client dropped the silent server %v after the reply, want %v (plus scheduling delay)", took, timeout)
	}
	again := srv.accept(t)
	again.handshake(testReply)
	rc.net.awaitLease(t) // the first session's lease
	rc.net.awaitLease(t) // the reconnected session's
	if rc.net.discardCount() != 0 {
		t.Errorf("the TUN was replaced %d times, want it kept across reconnects", rc.net.discardCount())
	}
	if !strings.Contains(rc.logs.String(), "no heartbeat from server") {
		t.Errorf("disconnect reason not logged:\n%s", rc.logs.String())
	}
}

// TestHeartbeatingServerKeepsSession keeps a session alive by server
// heartbeats for longer than the timeout, then proves it is still the same
// working session by a positive event: a 103 sent on it reaches the TUN,
// and the client's own heartbeats still arrive on it. The server sends a
// 104 every 50 ms against a 1 s timeout, so only a scheduling stall of
// nearly a second (not the 200 ms that -race on a busy machine can reach)
// could starve the client; without the heartbeats it would be dropped
// after 1 s, well inside the 1.5 s the test runs.
func TestHeartbeatingServerKeepsSession(t *testing.T) {
	verifyNoLeaks(t)
	const (
		timeout = time.Second
		every   = 50 * time.Millisecond
		lasting = timeout * 3 / 2
	)
	srv := newFakeServer(t)
	rc := startClient(t, srv, sessionConfig{heartbeat: 100 * time.Millisecond, timeout: timeout, handshakeTimeout: time.Second})
	p := srv.accept(t)
	p.handshake(testReply)
	rc.net.awaitLease(t)
	for start := time.Now(); time.Since(start) < lasting; time.Sleep(every) {
		p.write(wire.Heartbeat)
	}
	pong := tuntest.Pong(remoteAddr, leasedAddr, 9, 1, []byte("still here"))
	p.write(wire.AppendFrame(nil, wire.TypeDataReply, pong))
	select {
	case got := <-rc.net.device().Written():
		if !bytes.Equal(got, pong) {
			t.Fatalf("TUN got %x, want %x", got, pong)
		}
	case <-time.After(waitLong):
		t.Fatalf("a 103 sent after %v of heartbeats never reached the TUN:\n%s", lasting, rc.logs.String())
	}
	p.next(wire.TypeHeartbeat) // fails if the client closed this connection
	if n := rc.logs.count("msg=disconnected"); n != 0 {
		t.Fatalf("client disconnected %d times from a server sending heartbeats:\n%s", n, rc.logs.String())
	}
}

func TestProtocolViolationsReconnect(t *testing.T) {
	tooLarge := binary.LittleEndian.AppendUint32(nil, 0x7fffffff)
	tests := []struct {
		name      string
		handshake bool
		send      []byte
		hangUp    bool
		reason    string
	}{
		{"frame length 0x7fffffff", true, append(tooLarge, wire.TypeDataReply), false, "framing lost"},
		{"frame length just above the limit", true, append(binary.LittleEndian.AppendUint32(nil, wire.MaxFrameLen+1), wire.TypeDataReply), false, "framing lost"},
		{"unknown type", true, wire.AppendFrame(nil, 42, []byte("x")), false, "unexpected frame type 42"},
		{"client type from server", true, wire.AppendFrame(nil, wire.TypeDataRequest, nil), false, "unexpected frame type 102"},
		{"unknown type before reply", false, wire.AppendFrame(nil, 42, nil), false, "frame type 42 before"},
		{"too large before reply", false, append(tooLarge, wire.TypeIPReply), false, "framing lost"},
		{"malformed reply", false, wire.AppendFrame(nil, wire.TypeIPReply, []byte("not an address \x00")), false, "malformed IP reply"},
		{"unusable address", false, wire.AppendFrame(nil, wire.TypeIPReply, []byte("0.0.0.0 0.0.0.0 1.1.1.1 1.1.1.1 1.1.1.1 \x00")), false, "not a unicast host"},
		{"stream ends mid-frame", true, []byte{200, 0, 0, 0, wire.TypeDataReply, 0x45}, true, "middle of a frame"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			srv := newFakeServer(t)
			rc := startClient(t, srv, shortTimers())
			p := srv.accept(t)
			if tt.handshake {
				p.handshake(testReply)
			} else {
				p.next(wire.TypeIPRequest)
			}
			p.write(tt.send)
			if tt.hangUp {
				_ = p.conn.(interface{ CloseWrite() error }).CloseWrite()
			}
			p.awaitClose(waitLong)
			srv.accept(t).handshake(testReply)
			if !rc.running() {
				t.Fatal("client stopped after a protocol violation")
			}
			waitFor(t, func() bool { return strings.Contains(rc.logs.String(), tt.reason) },
				fmt.Sprintf("a log line with %q", tt.reason))
		})
	}
}

func TestDeviceFailureReplacesDevice(t *testing.T) {
	verifyNoLeaks(t)
	srv, rc, p := leasedSession(t)
	broken := rc.net.device()
	_ = broken.Close()
	p.awaitClose(waitLong)
	srv.accept(t).handshake(testReply)
	rc.net.awaitLease(t)
	if rc.net.discardCount() != 1 || rc.net.device() == broken {
		t.Fatalf("after a TUN failure: %d discards, same device %v; want the device replaced once", rc.net.discardCount(), rc.net.device() == broken)
	}
}

func TestShutdownClosesConnectionPromptly(t *testing.T) {
	verifyNoLeaks(t)
	_, rc, p := leasedSession(t)
	start := time.Now()
	if !rc.stop(time.Second) {
		t.Fatal("client did not stop within 1 s of cancellation")
	}
	p.awaitClose(time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("shutdown took %v", took)
	}
	if !strings.Contains(rc.logs.String(), "reason=\"shutting down\"") {
		t.Errorf("shutdown not logged as the disconnect reason:\n%s", rc.logs.String())
	}
}

func TestServerDownIsRetried(t *testing.T) {
	verifyNoLeaks(t)
	srv := newFakeServer(t)
	rc := startClient(t, srv, shortTimers())
	// The server hangs up before answering: a failed connect, retried.
	for range 3 {
		p := srv.accept(t)
		p.next(wire.TypeIPRequest)
		_ = p.conn.Close()
	}
	srv.accept(t).handshake(testReply)
	rc.net.awaitLease(t)
	if n := rc.logs.count("msg=\"connect failed\""); n != 3 {
		t.Errorf("%d connect failures logged, want 3:\n%s", n, rc.logs.String())
	}
}

// waitFor polls cond until it holds or fails the test.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SIGHUP drops the connection and connects again at once, without the
// backoff and without giving up the lease's device.
func TestSIGHUPReconnectsAtOnce(t *testing.T) {
	verifyNoLeaks(t)
	srv := newFakeServer(t)
	hup := make(chan os.Signal, 1)
	cfg := shortTimers()
	cfg.timeout = time.Hour // only the signal may end the session
	rc := startClientWith(t, srv, cfg, hup)
	first := srv.accept(t)
	first.handshake(testReply)
	rc.net.awaitLease(t)
	hup <- syscall.SIGHUP
	first.awaitClose(waitLong)
	second := srv.accept(t)
	second.handshake(testReply)
	rc.net.awaitLease(t)
	if !rc.logs.hasLine("disconnected", "SIGHUP") {
		t.Errorf("the reconnect is not logged with its reason:\n%s", rc.logs.String())
	}
	if n := rc.net.discardCount(); n != 0 {
		t.Errorf("the device was discarded %d times on a reconnect", n)
	}
}
