package actors

// Benchmarks of the hot path. Each pair runs the same work through the
// actors and through a baseline in the same run, so results compare as a
// ratio (see docs/performance.md):
//
//   - Downlink: TUN reader -> Router -> session, as actor messages carrying
//     batches, against the same routing code over buffered Go channels.
//   - Uplink: a client streaming 102 frames over real TCP on loopback into
//     the real engine (decoder, session checks, TUN actor), against the
//     bare carrier: the same bytes over the same kind of TCP connection.

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

const benchBatch = 32

var benchDst = netip.MustParseAddr("192.0.2.2")

// benchPacket is a 1400-byte UDP packet to benchDst, a typical full-size
// tunnel packet.
var benchPacket = tuntest.UDP(netip.AddrPortFrom(inetHost, 53), netip.AddrPortFrom(benchDst, 4000), make([]byte, 1372))

func fillBatch() *messages.ToClient {
	b := messages.NewToClient()
	for range benchBatch {
		b.AppendCopy(benchPacket)
	}
	return b
}

// sink counts packets and closes done once it has seen want of them.
type sink struct {
	seen, want int
	done       chan struct{}
}

func (s *sink) take(b *messages.ToClient) {
	s.seen += len(b.Packets)
	b.Release()
	if s.seen >= s.want {
		close(s.done)
	}
}

func (s *sink) Receive(ctx actor.Context) {
	if b, ok := ctx.Message().(*messages.ToClient); ok {
		s.take(b)
	}
}

// routeStub answers the Router's RouteSync with one route to the sink.
type routeStub struct{ table *messages.RouteTable }

func (r *routeStub) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*messages.RouteSync); ok {
		ctx.Respond(r.table)
	}
}

func BenchmarkDownlink(b *testing.B) {
	b.Run("actors", benchDownlinkActors)
	b.Run("channels", benchDownlinkChannels)
}

func benchDownlinkActors(b *testing.B) {
	sys := quietSystem()
	defer sys.Shutdown()
	s := &sink{want: b.N * benchBatch, done: make(chan struct{})}
	sinkPID := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return s }))
	// No inbox budget for the sink: the benchmark's producer runs at
	// memory speed (GB/s), far beyond any TUN, and a session's 16-batch
	// inbox would drop 20-60% of it; the comparison needs both versions
	// to deliver every packet.
	pool := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &routeStub{table: &messages.RouteTable{Routes: []messages.RouteAdd{{Addr: benchDst, Session: sinkPID}}}}
	}))
	cfg := &shared{Config: Config{Metrics: &Metrics{}}.withDefaults(), pool: pool}
	router := sys.Root.Spawn(actor.PropsFromProducer(newRouter(cfg)))
	waitForRoute(b, sys, router)
	budget := messages.NewBudget(routerBudget)
	b.SetBytes(int64(benchBatch * len(benchPacket)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		// As the TUN reader does: a token per batch in flight to the
		// Router, so the producer cannot run ahead without bound.
		batch := fillBatch()
		budget.Acquire(&batch.Batch, nil)
		sys.Root.Send(router, batch)
	}
	<-s.done
	b.StopTimer()
	_ = sys.Root.PoisonFuture(router).Wait()
}

// waitForRoute returns once the Router has its table from the stub pool:
// packets sent earlier would be dropped as unroutable.
func waitForRoute(b testing.TB, sys *actor.ActorSystem, router *actor.PID) {
	for range 100 {
		res, err := sys.Root.RequestFuture(router, &messages.RoutesQuery{}, time.Second).Result()
		if err != nil {
			b.Fatal(err)
		}
		if len(res.(*messages.Routes).Routes) == 1 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	b.Fatal("router never received its table")
}

func benchDownlinkChannels(b *testing.B) {
	s := &sink{want: b.N * benchBatch, done: make(chan struct{})}
	// Buffers as deep as the actors' budget, so both versions let the
	// producer run the same distance ahead.
	toRouter := make(chan *messages.ToClient, routerBudget)
	toSink := make(chan *messages.ToClient, routerBudget)
	r := &Router{cfg: &shared{Config: Config{Metrics: &Metrics{}}}, routes: map[netip.Addr]route{benchDst: {pid: &actor.PID{Id: "sink"}}}}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for in := range toRouter {
			out := messages.NewToClient()
			for _, p := range in.Packets {
				if _, ok := r.lookup(p); ok {
					out.Packets = append(out.Packets, p)
				}
			}
			in.Recycle()
			toSink <- out
		}
		close(toSink)
	}()
	go func() {
		defer wg.Done()
		for batch := range toSink {
			s.take(batch)
		}
	}()
	b.SetBytes(int64(benchBatch * len(benchPacket)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		toRouter <- fillBatch()
	}
	<-s.done
	b.StopTimer()
	close(toRouter)
	wg.Wait()
}

// countingDevice is a TUN that only counts what is written to it, so the
// uplink benchmark measures the engine, not a fake's bookkeeping.
type countingDevice struct {
	written atomic.Int64
	want    int64
	done    chan struct{}
	closed  chan struct{}
	once    sync.Once
	stop    sync.Once
}

func (d *countingDevice) Name() string { return "bench0" }
func (d *countingDevice) MTU() int     { return 1500 }
func (d *countingDevice) Read([][]byte, []int) (int, error) {
	<-d.closed
	return 0, os.ErrDeadlineExceeded
}
func (d *countingDevice) Write(bufs [][]byte) (int, error) {
	if d.written.Add(int64(len(bufs))) >= d.want {
		d.once.Do(func() { close(d.done) })
	}
	return len(bufs), nil
}

// SetReadDeadline with any time stops the reader: the engine sets one only
// to stop it.
func (d *countingDevice) SetReadDeadline(t time.Time) error {
	if !t.IsZero() {
		d.stop.Do(func() { close(d.closed) })
	}
	return nil
}
func (d *countingDevice) Close() error { return d.SetReadDeadline(time.Now()) }

// uplinkStream is n 102 frames carrying benchPacket from src.
func uplinkStream(src netip.Addr, n int) []byte {
	pkt := append([]byte(nil), benchPacket...)
	copy(pkt[12:16], src.AsSlice())
	copy(pkt[16:20], inetHost.AsSlice())
	var out []byte
	for range n {
		out = wire.AppendFrame(out, wire.TypeDataRequest, pkt)
	}
	return out
}

func BenchmarkUplink(b *testing.B) {
	b.Run("engine", benchUplinkEngine)
	b.Run("carrier", benchUplinkCarrier)
}

const framesPerWrite = 64

func benchUplinkEngine(b *testing.B) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		b.Skipf("no IPv6 loopback: %v", err)
	}
	dev := &countingDevice{want: int64(b.N * framesPerWrite), done: make(chan struct{}), closed: make(chan struct{})}
	srv, err := Start(Config{Listener: ln, Device: dev, Pool: testPool, DNS: testDNS,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Close(); _ = dev.Close() }()
	conn, err := net.Dial("tcp6", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	dec := wire.NewDecoder(conn)
	defer dec.Release()
	if _, err := conn.Write(wire.AppendFrame(nil, wire.TypeIPRequest, nil)); err != nil {
		b.Fatal(err)
	}
	f, err := dec.Next()
	if err != nil {
		b.Fatal(err)
	}
	reply, err := wire.ParseIPReply(f.Payload)
	if err != nil {
		b.Fatal(err)
	}
	stream := uplinkStream(reply.Addr, framesPerWrite)
	b.SetBytes(int64(len(stream)))
	b.ResetTimer()
	for range b.N {
		if _, err := conn.Write(stream); err != nil {
			b.Fatal(err)
		}
	}
	<-dev.done
}

func benchUplinkCarrier(b *testing.B) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		b.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	stream := uplinkStream(benchDst, framesPerWrite)
	total := int64(b.N) * int64(len(stream))
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		_, err = io.CopyN(io.Discard, conn, total)
		done <- err
	}()
	conn, err := net.Dial("tcp6", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	b.SetBytes(int64(len(stream)))
	b.ResetTimer()
	for range b.N {
		if _, err := conn.Write(stream); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
