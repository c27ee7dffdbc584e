package main

// The server's -rate-limit against real TCP through the real binaries:
// timed transfers each way, measured as bounds (see TestE2ERateLimit).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
)

const (
	cmdTimedUp   = 'u'
	cmdTimedDown = 'd'
)

// handleTimed serves one timed transfer: the header is the command and
// the duration. Up: it counts what the client sends for that long, then
// answers with the count (8 bytes) and waits for the client to close.
// Down: it sends for that long, then closes its side.
func handleTimed(c net.Conn) {
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	d := time.Duration(binary.LittleEndian.Uint64(hdr[1:]))
	switch hdr[0] {
	case cmdTimedUp:
		_ = c.SetReadDeadline(time.Now().Add(d))
		n, err := io.Copy(io.Discard, c)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		_ = c.SetDeadline(time.Now().Add(transferTimeout))
		if _, err := c.Write(binary.LittleEndian.AppendUint64(nil, uint64(n))); err == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	case cmdTimedDown:
		_ = c.SetWriteDeadline(time.Now().Add(d))
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
	}
}

// timedTransfer runs one timed transfer of d from ns and returns the bytes
// the receiving end got and an interval that contains all of their
// journey: it starts before the connection is dialled and ends after the
// receiver has counted the last of them. A loaded machine can only make
// it longer, so bytes/took can only come out lower than the true rate.
func timedTransfer(ns *netnstest.NS, to netip.AddrPort, cmd byte, d time.Duration) (bytes int64, took time.Duration, err error) {
	start := time.Now()
	var conn net.Conn
	if err := ns.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", to.String(), 10*time.Second)
		return err
	}); err != nil {
		return 0, 0, fmt.Errorf("dial from %s: %w", ns.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(d + transferTimeout))
	if _, err := conn.Write(binary.LittleEndian.AppendUint64([]byte{cmd}, uint64(d))); err != nil {
		return 0, 0, err
	}
	if cmd == cmdTimedDown {
		n, err := io.Copy(io.Discard, conn)
		return n, time.Since(start), err
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		buf := make([]byte, 64<<10)
		for {
			if _, err := conn.Write(buf); err != nil {
				return // the connection is closed below
			}
		}
	}()
	var count [8]byte
	_, err = io.ReadFull(conn, count[:])
	took = time.Since(start)
	_ = conn.Close()
	<-sent
	return int64(binary.LittleEndian.Uint64(count[:])), took, err
}

// timedServer serves handleTimed on the internet host until the test ends.
func timedServer(t *testing.T, tp *topology) netip.AddrPort {
	return internetServer(t, tp, handleTimed)
}

// uplinkDrops are the reasons a server drops a client's packets for.
var uplinkDrops = []string{"not_ipv4", "before_lease", "spoofed", "too_big", "client_to_client", "tun_write"}

// TestE2ERateLimit runs a TCP transfer each way through a server with
// -rate-limit 8mbit: each direction's throughput must be above zero and at
// most 125% of 8 Mbit/s. That is a bound, not a timing assertion: the
// bucket lets through at most its depth (128 KiB) plus 8 Mbit/s times the
// interval, the interval measured contains the whole transfer, and 5 s of
// 25% is 1.25 MB, ten times the depth; a loaded machine can only lower
// the rate measured. The download is policed (rate_limit drops), the
// upload paced (the server drops nothing of it). The same transfers
// without the limit are reported for comparison.
func TestE2ERateLimit(t *testing.T) {
	const limit = 8e6
	for _, tc := range []struct {
		name  string
		flags []string
		d     time.Duration
	}{
		{"8mbit", []string{"-rate-limit", "8mbit"}, 5 * time.Second},
		{"off", nil, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopology(t, 1)
			srv := tp.runServer(t, tc.flags...)
			connectedAddr(t, tp.runClient(t, 0), tp.clients[0])
			limited := tc.flags != nil
			if limited {
				srv.awaitLog(t, "rate_limit=8mbit") // in the session's log line
			}
			to := timedServer(t, tp)
			// Down first: the paced upload leaves data queued in the
			// client's socket buffers, which would delay the download's
			// ACKs behind it.
			for _, dir := range []struct {
				name string
				cmd  byte
			}{{"down", cmdTimedDown}, {"up", cmdTimedUp}} {
				bytes, took, err := timedTransfer(tp.clients[0], to, dir.cmd, tc.d)
				if err != nil {
					t.Fatalf("%s: %v", dir.name, err)
				}
				rate := float64(bytes) * 8 / took.Seconds()
				t.Logf("%s: %d bytes in %v: %.2f Mbit/s (%.0f%% of 8 Mbit/s)", dir.name, bytes, took.Round(time.Millisecond), rate/1e6, 100*rate/limit)
				switch {
				case bytes == 0:
					t.Errorf("%s: nothing arrived", dir.name)
				case limited && rate > 1.25*limit:
					t.Errorf("%s: %.2f Mbit/s through a server with -rate-limit 8mbit, above the 10 Mbit/s bound", dir.name, rate/1e6)
				}
			}
			m := admin(t, tp.srv, "GET", "/metrics")
			policed := metric(t, m, `fourover6d_drops_total{reason="rate_limit"}`)
			t.Logf("rate_limit drops: %v", policed)
			if limited != (policed > 0) {
				t.Errorf("%v packets dropped as rate_limit; want some exactly when limited", policed)
			}
			for _, r := range uplinkDrops {
				if n := metric(t, m, fmt.Sprintf("fourover6d_drops_total{reason=%q}", r)); n != 0 {
					t.Errorf("the server dropped %v of the client's packets as %s; pacing must drop none", n, r)
				}
			}
		})
	}
}
