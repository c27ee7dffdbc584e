package main

// Traffic for the end-to-end tests: a TCP server in the internet namespace
// that receives or sends a deterministic pseudo-random stream, and a fake
// tunnel server that breaks framing.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/netnstest"
)

const (
	transferSize    = 20 << 20
	transferTimeout = 60 * time.Second
	cmdUpload       = 'U'
	cmdDownload     = 'D'
)

// stream is the transferred content: pseudo-random, so no compression or
// repetition hides corruption, and reproducible from its seed.
func stream(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return io.LimitReader(rand.NewChaCha8(key), transferSize)
}

func streamSum(seed uint64) []byte {
	h := sha256.New()
	_, _ = io.Copy(h, stream(seed))
	return h.Sum(nil)
}

// connServer accepts connections on ln and runs handle on each; close
// stops it and waits for every handler.
type connServer struct {
	ln       net.Listener
	handle   func(net.Conn)
	count    atomic.Int32
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	stopOnce sync.Once
}

func serveConns(ln net.Listener, handle func(net.Conn)) *connServer {
	s := &connServer{ln: ln, handle: handle}
	s.wg.Go(s.acceptLoop)
	return s
}

func (s *connServer) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.count.Add(1)
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Go(func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(transferTimeout))
			s.handle(c)
		})
	}
}

func (s *connServer) accepted() int { return int(s.count.Load()) }

func (s *connServer) close() {
	s.stopOnce.Do(func() {
		_ = s.ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// handleTransfer reads a command byte and a seed, then either hashes what
// the client uploads and answers with the hash, or sends the stream.
func handleTransfer(c net.Conn) {
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	seed := binary.LittleEndian.Uint64(hdr[1:])
	switch hdr[0] {
	case cmdUpload:
		h := sha256.New()
		if _, err := io.Copy(h, c); err == nil {
			_, _ = c.Write(h.Sum(nil))
		}
	case cmdDownload:
		_, _ = io.Copy(c, stream(seed))
	}
}

// newMalformedServer answers the address request with a valid reply, then
// sends a header declaring a 0x7fffffff-byte frame.
func newMalformedServer(ln net.Listener) *connServer {
	return serveConns(ln, func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, wire.HeaderLen)); err != nil {
			return
		}
		out := testReply.AppendFrame(nil)
		out = binary.LittleEndian.AppendUint32(out, 0x7fffffff)
		out = append(out, wire.TypeDataReply)
		if _, err := c.Write(out); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	})
}

// transfer moves the stream of seed through a connection dialled from ns,
// up or down, and checks it arrived intact.
func transfer(ns *netnstest.NS, to netip.AddrPort, cmd byte, seed uint64) error {
	var conn net.Conn
	if err := ns.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", to.String(), 10*time.Second)
		return err
	}); err != nil {
		return fmt.Errorf("dial from %s: %w", ns.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(transferTimeout))
	hdr := binary.LittleEndian.AppendUint64([]byte{cmd}, seed)
	if _, err := conn.Write(hdr); err != nil {
		return err
	}
	if cmd == cmdDownload {
		h := sha256.New()
		n, err := io.Copy(h, conn)
		if err != nil || n != transferSize || !bytes.Equal(h.Sum(nil), streamSum(seed)) {
			return fmt.Errorf("download to %s: %d of %d bytes, %v, content intact %v", ns.Name, n, transferSize, err, bytes.Equal(h.Sum(nil), streamSum(seed)))
		}
		return nil
	}
	if _, err := io.Copy(conn, stream(seed)); err != nil {
		return fmt.Errorf("upload from %s: %w", ns.Name, err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(conn, sum); err != nil || !bytes.Equal(sum, streamSum(seed)) {
		return fmt.Errorf("upload from %s: server hash %x, %v; want %x", ns.Name, sum, err, streamSum(seed))
	}
	return nil
}

// TestE2ETwoClientsReachInternet moves 20 MiB each way for two clients at
// once, with TUN offloads (the default) and without: the two modes read
// and write the TUNs through different code, and both must deliver every
// byte. With offloads the server's counters must show that the kernel
// really exchanged GSO packets with it in both directions.
func TestE2ETwoClientsReachInternet(t *testing.T) {
	for _, mode := range []struct {
		name    string
		flags   []string
		offload bool
	}{
		{"offload", nil, true},
		{"plain", []string{"-offload=false"}, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			tp := newTopology(t, 2)
			tp.runServer(t, mode.flags...)
			twoClientsTransfer(t, tp, mode.flags)
			checkOffloadMetrics(t, admin(t, tp.srv, "GET", "/metrics"), mode.offload)
		})
	}
}

// checkOffloadMetrics asserts on the server's offload counters.
func checkOffloadMetrics(t *testing.T, metrics string, offload bool) {
	t.Helper()
	value := func(name string) float64 {
		for line := range strings.Lines(metrics) {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				var v float64
				if _, err := fmt.Sscan(rest, &v); err == nil {
					return v
				}
			}
		}
		t.Fatalf("metrics lack %s:\n%s", name, metrics)
		return 0
	}
	enabled := value("fourover6d_tun_offload_enabled")
	read := value(`fourover6d_tun_gso_segments_total{direction="read"}`)
	written := value(`fourover6d_tun_gso_segments_total{direction="write"}`)
	t.Logf("offload enabled %v, segments read in GSO packets %v, merged into GSO writes %v", enabled, read, written)
	switch {
	case offload && (enabled != 1 || read < 1000 || written < 1000):
		t.Errorf("with offloads the server split %v and merged %v segments; want thousands each way", read, written)
	case !offload && (enabled != 0 || read != 0 || written != 0):
		t.Errorf("without offloads: enabled %v, %v and %v segments; want all zero", enabled, read, written)
	}
}

// transferServer serves handleTransfer on the internet host until the test
// ends and returns its address.
func transferServer(t *testing.T, tp *topology) netip.AddrPort {
	return internetServer(t, tp, handleTransfer)
}

// internetServer serves handle on a TCP port of the internet host until
// the test ends and returns its address.
func internetServer(t *testing.T, tp *topology, handle func(net.Conn)) netip.AddrPort {
	var ln net.Listener
	if err := tp.inet.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(inetV4, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := serveConns(ln, handle)
	t.Cleanup(srv.close)
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func twoClientsTransfer(t *testing.T, tp *topology, clientFlags []string) {
	to := transferServer(t, tp)

	seen := map[netip.Addr]bool{}
	for i, ns := range tp.clients {
		seen[connectedAddr(t, tp.runClient(t, i, clientFlags...), ns)] = true
	}
	if len(seen) != 2 {
		t.Fatalf("the two clients leased %v, want two distinct addresses", seen)
	}
	for _, ns := range tp.clients {
		if err := ping(t, ns, 3); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	errs := make(chan error, 2*len(tp.clients))
	var wg sync.WaitGroup
	for i, ns := range tp.clients {
		for _, cmd := range []byte{cmdUpload, cmdDownload} {
			wg.Go(func() { errs <- transfer(ns, to, cmd, uint64(10*i)+uint64(cmd)) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	took := time.Since(start)
	t.Logf("4 transfers of %d MiB (each client up and down at once) in %v: %.0f Mbit/s in total",
		transferSize>>20, took.Round(time.Millisecond), float64(4*transferSize*8)/took.Seconds()/1e6)
}

func TestE2EWithoutNetAdminExitsWithOneLine(t *testing.T) {
	tp := newTopology(t, 1)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed to drop CAP_NET_ADMIN: %v", err)
	}
	_, bin := binaries(t)
	out, err := tp.clients[0].Command(context.Background(), "setpriv", "--bounding-set=-net_admin", "--",
		bin, "-server", netip.AddrPortFrom(serverV6(0), 5678).String()).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1; output %q", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "CAP_NET_ADMIN") {
		t.Fatalf("output %q: want one line naming CAP_NET_ADMIN", out)
	}
}
