package actors

// The TUN actor's part of both paths:
//
//   - Reading: a reader goroutine, owned by the actor, blocks in
//     Device.Read, which returns as many queued packets as it can in one
//     call; the packets (in pooled buffers) go to the Router as one
//     *messages.ToClient batch.
//   - Writing: sessions send *messages.FromClient batches; the actor writes
//     them to the device and returns the buffers to the pool.
//
// The device outlives the actor: on restart the old incarnation stops its
// reader with a read deadline (not Close), and the new one starts a fresh
// reader on the same device. Signals from a reader carry the incarnation
// that started it, so a new incarnation never acts on its predecessor's.
//
// A multi-queue TUN has one TUN actor per queue (Config.Queues), each with
// its own device, reader and restarts; every reader feeds the one Router,
// and each session writes to the queue its address picks (shared.tunFor).

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun"
)

// readerRetry is the pause before a reader is restarted after a device
// error that was not a shutdown, so a failing device does not spin.
const readerRetry = 100 * time.Millisecond

// routerBudget bounds the batches the TUN reader has in flight to the
// Router. When the Router falls behind, the reader stops reading and the
// kernel's TUN queue takes the excess (and drops it when full, counted as
// the device's TX drops) instead of the Router's mailbox growing.
const routerBudget = 16

// TUNActor owns the tun.Device's I/O.
type TUNActor struct {
	cfg         *shared
	dev         tun.Device
	queue       int // which of cfg.Queues dev is, for the logs
	incarnation uint64
	writeLog    logLimit      // refused packets (see logWriteError)
	done        chan struct{} // closed when the reader goroutine has exited
	stop        chan struct{} // closed to stop a reader waiting for budget
}

// readerStopped reports why the reader goroutine of an incarnation exited.
type readerStopped struct {
	incarnation uint64
	err         error
}

// restartReader asks an incarnation to start its reader again after an
// error.
type restartReader struct{ incarnation uint64 }

func (*restartReader) IgnoreDeadLetterLogging() {}
func (*readerStopped) IgnoreDeadLetterLogging() {}

// newTUNActor makes the actor of one queue of the TUN (cfg.Queues[queue]);
// with several queues there is one such actor per queue, each with its own
// reader goroutine, all feeding the one Router.
func newTUNActor(cfg *shared, queue int) actor.Producer {
	var incarnations atomic.Uint64
	return func() actor.Actor {
		return &TUNActor{cfg: cfg, dev: cfg.Queues[queue], queue: queue, incarnation: incarnations.Add(1)}
	}
}

// Receive handles one message; see the file comment.
func (t *TUNActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.FromClient:
		t.write(m)
	case *actor.Started:
		t.startReader(ctx)
	case *restartReader:
		if m.incarnation == t.incarnation {
			t.startReader(ctx)
		}
	case *readerStopped:
		if m.incarnation == t.incarnation {
			t.onReaderStopped(ctx, m.err)
		}
	case *actor.Restarting, *actor.Stopping:
		t.stopReader()
	case *messages.HealthCheck:
		ctx.Respond(&messages.Healthy{})
	case *messages.InjectPanic:
		panic("injected fault in TUN actor: " + m.Reason)
	}
}

// write hands a batch to the device. A packet the device refuses is
// skipped and counted; the rest of the batch is still written. The batch
// (and its session's budget token) is released however write ends, a
// panic included, or that session's uplink would stall for good.
func (t *TUNActor) write(b *messages.FromClient) {
	defer b.Release()
	for pkts := b.Packets; len(pkts) > 0; {
		n, err := t.dev.Write(pkts)
		if err == nil || n >= len(pkts) {
			return
		}
		if errors.Is(err, tun.ErrClosed) {
			t.cfg.Metrics.Drop(DropTUNWrite, len(pkts)-n)
			return
		}
		t.cfg.Metrics.Drop(DropTUNWrite, 1)
		t.logWriteError(err, len(pkts[n]))
		pkts = pkts[n+1:]
	}
}

// logWriteError logs at most one refused packet per dropLogEvery: a
// client can make every one of its packets fail.
func (t *TUNActor) logWriteError(err error, size int) {
	if suppressed, ok := t.writeLog.allow(); ok {
		t.cfg.Logger.Debug("failed to write a packet to TUN; skipped it", slog.Int("queue", t.queue), slog.Any("err", err), slog.Int("bytes", size),
			slog.Int("suppressed_before", suppressed))
	}
}

func (t *TUNActor) startReader(ctx actor.Context) {
	if t.done != nil {
		return
	}
	if err := t.dev.SetReadDeadline(time.Time{}); err != nil {
		t.cfg.Logger.Error("failed to clear TUN read deadline", slog.Int("queue", t.queue), slog.Any("err", err))
	}
	t.done, t.stop = make(chan struct{}), make(chan struct{})
	go readTUN(t.dev, ctx.ActorSystem(), ctx.Self(), t.cfg.router, t.cfg.Metrics, t.incarnation, t.stop, t.done)
}

// stopReader unblocks the reader with a deadline and waits for it, so no
// two readers ever share the device.
func (t *TUNActor) stopReader() {
	if t.done == nil {
		return
	}
	close(t.stop)
	if err := t.dev.SetReadDeadline(time.Now()); err != nil && !errors.Is(err, tun.ErrClosed) {
		t.cfg.Logger.Error("failed to set TUN read deadline", slog.Int("queue", t.queue), slog.Any("err", err))
	}
	<-t.done
	t.done = nil
}

func (t *TUNActor) onReaderStopped(ctx actor.Context, err error) {
	t.done = nil
	if errors.Is(err, tun.ErrClosed) || errors.Is(err, os.ErrClosed) {
		t.cfg.Logger.Info("TUN device closed; reader stopped", slog.Int("queue", t.queue))
		return
	}
	t.cfg.Logger.Error("TUN reader failed; restarting it", slog.Int("queue", t.queue), slog.Any("err", err))
	self, sys, retry := ctx.Self(), ctx.ActorSystem(), &restartReader{incarnation: t.incarnation}
	time.AfterFunc(readerRetry, func() { sys.Root.Send(self, retry) })
}

// readTUN is the TUN actor's reader goroutine. It exits on any read error,
// reporting it unless the error is the deadline its owner set to stop it.
// A panic here is not supervised by protoactor, so it is turned into an
// error for the actor.
func readTUN(dev tun.Device, sys *actor.ActorSystem, self, router *actor.PID, m *Metrics, incarnation uint64, stop, done chan struct{}) {
	defer close(done)
	budget := messages.NewBudget(routerBudget)
	err := readLoop(dev, func(b *messages.ToClient) error {
		if !acquireRouterBudget(budget, b, m, stop) {
			b.Release()
			return os.ErrDeadlineExceeded // stopped by the owner
		}
		sys.Root.Send(router, b)
		return nil
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		sys.Root.Send(self, &readerStopped{incarnation: incarnation, err: err})
	}
}

// acquireRouterBudget takes a token for b, and counts the waits when the
// Router holds all of them: while the reader waits, the kernel's TUN queue
// (txqueuelen) takes what arrives and drops the rest as the device's TX
// drops, so these counters say that the Router's budget, not the reader,
// was the bound.
func acquireRouterBudget(budget messages.Budget, b *messages.ToClient, m *Metrics, stop <-chan struct{}) bool {
	if budget.TryAcquire(&b.Batch) {
		return true
	}
	start := time.Now()
	ok := budget.Acquire(&b.Batch, stop)
	m.TUNReaderWaits.Add(1)
	m.TUNReaderWaitNanos.Add(uint64(time.Since(start)))
	return ok
}

func readLoop(dev tun.Device, send func(*messages.ToClient) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in TUN reader: %v", r)
		}
	}()
	size := max(dev.MTU(), wire.SmallPacketBuf)
	bufs := make([][]byte, wire.BatchCap)
	sizes := make([]int, wire.BatchCap)
	for i := range bufs {
		bufs[i] = wire.GetPacketBuf(size)
	}
	defer func() {
		for _, b := range bufs {
			wire.ReleasePacket(b)
		}
	}()
	for {
		n, err := dev.Read(bufs, sizes)
		if n > 0 {
			b := messages.NewToClient()
			for i := range n {
				b.Packets = append(b.Packets, bufs[i][:sizes[i]])
				bufs[i] = wire.GetPacketBuf(size)
			}
			if err := send(b); err != nil {
				return err
			}
		}
		if err != nil {
			return fmt.Errorf("failed to read from TUN %s: %w", dev.Name(), err)
		}
	}
}
