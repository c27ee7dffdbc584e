//go:build linux

package tun

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
)

// TestTCPAcrossTwoTUNs joins two namespaces with nothing but two client
// TUNs and a pump that copies batches between them, the way a tunnel does
// without the TCP carrier. A real kernel TCP connection across it must
// deliver every byte; with offloads the kernel must actually have handed
// over GSO packets, and the merged writes must have been accepted.
func TestTCPAcrossTwoTUNs(t *testing.T) {
	bothModes(t, func(t *testing.T, offload bool) {
		verifyNoLeaks(t)
		nsA, nsB := netnstest.New(t, "tun-gso-a"), netnstest.New(t, "tun-gso-b")
		addrA, addrB := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.20")
		devA := openClientInNS(t, nsA, addrA, offload)
		devB := openClientInNS(t, nsB, addrB, offload)
		if err := devA.AddRoutes([]netip.Prefix{netip.PrefixFrom(addrB, 32)}); err != nil {
			t.Fatal(err)
		}
		if err := devB.AddRoutes([]netip.Prefix{netip.PrefixFrom(addrA, 32)}); err != nil {
			t.Fatal(err)
		}
		stop := pumpBetween(t, devA, devB)

		data := make([]byte, 16<<20)
		rand.NewChaCha8([32]byte{4, 6}).Read(data) //nolint:errcheck // never fails
		got := transferTCP(t, nsA, nsB, netip.AddrPortFrom(addrB, 5001), data)
		stop()
		if got != sha256.Sum256(data) {
			t.Fatal("data arrived corrupted across the two TUNs")
		}
		a, b := devA.OffloadStats(), devB.OffloadStats()
		t.Logf("A: %+v", a)
		t.Logf("B: %+v", b)
		if !offload {
			if a != (OffloadStats{}) || b != (OffloadStats{}) {
				t.Fatal("offload counters moved on plain TUNs")
			}
			return
		}
		if a.GSOReads == 0 || a.SegmentsRead <= a.GSOReads {
			t.Errorf("sender's TUN handed over %d GSO packets (%d segments); want many multi-segment ones", a.GSOReads, a.SegmentsRead)
		}
		if b.GSOWrites == 0 || b.SegmentsWritten <= b.GSOWrites {
			t.Errorf("receiver's TUN took %d merged writes (%d segments); want many", b.GSOWrites, b.SegmentsWritten)
		}
		if a.Malformed+b.Malformed != 0 {
			t.Errorf("malformed packets: %d and %d", a.Malformed, b.Malformed)
		}
	})
}

// pumpBetween copies packets both ways between a and b, batch by batch,
// until the returned stop function is called.
func pumpBetween(t *testing.T, a, b *Linux) (stop func()) {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() { errs <- pump(a, b) })
	wg.Go(func() { errs <- pump(b, a) })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			a.SetReadDeadline(time.Now())
			b.SetReadDeadline(time.Now())
			wg.Wait()
			close(errs)
			for err := range errs {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("pump: %v", err)
				}
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func pump(from, to *Linux) error {
	bufs, sizes := newBufs(64)
	out := make([][]byte, 0, len(bufs))
	for {
		n, err := from.Read(bufs, sizes)
		if err != nil {
			return err
		}
		out = out[:0]
		for i := range n {
			out = append(out, bufs[i][:sizes[i]])
		}
		if _, err := to.Write(out); err != nil {
			return err
		}
	}
}

// transferTCP sends data from nsA to a listener at dst in nsB and returns
// the SHA-256 of what the listener received.
func transferTCP(t *testing.T, nsA, nsB *netnstest.NS, dst netip.AddrPort, data []byte) [32]byte {
	t.Helper()
	var ln net.Listener
	if err := nsB.Do(func() (err error) { ln, err = net.Listen("tcp4", dst.String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan [32]byte, 1)
	go func() {
		var sum [32]byte
		defer func() { received <- sum }()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		if _, err := io.Copy(h, conn); err == nil {
			copy(sum[:], h.Sum(nil))
		}
	}()
	var conn net.Conn
	if err := nsA.Do(func() (err error) { conn, err = net.DialTimeout("tcp4", dst.String(), 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(conn, bytes.NewReader(data)); err != nil {
		t.Fatalf("send: %v", err)
	}
	conn.Close()
	return <-received
}
