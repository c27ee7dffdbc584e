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
// reader on the same device.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
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
	cfg  *shared
	dev  tun.Device
	done chan struct{} // closed when the reader goroutine has exited
	stop chan struct{} // closed to stop a reader waiting for budget
}

// readerStopped reports why the reader goroutine exited.
type readerStopped struct{ err error }

// restartReader asks the actor to start its reader again after an error.
type restartReader struct{}

func (*restartReader) IgnoreDeadLetterLogging() {}

func newTUNActor(cfg *shared) actor.Producer {
	return func() actor.Actor { return &TUNActor{cfg: cfg, dev: cfg.Device} }
}

// Receive handles one message; see the file comment.
func (t *TUNActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.FromClient:
		t.write(m)
	case *actor.Started, *restartReader:
		t.startReader(ctx)
	case *readerStopped:
		t.onReaderStopped(ctx, m.err)
	case *actor.Restarting, *actor.Stopping:
		t.stopReader()
	case *messages.InjectPanic:
		panic("injected fault in TUN actor: " + m.Reason)
	}
}

func (t *TUNActor) write(b *messages.FromClient) {
	n, err := t.dev.Write(b.Packets)
	if err != nil && !errors.Is(err, tun.ErrClosed) {
		t.cfg.Metrics.Drop(DropTUNWrite, len(b.Packets)-n)
		t.cfg.Logger.Debug("failed to write to TUN", slog.Any("err", err), slog.Int("dropped", len(b.Packets)-n))
	}
	b.Release()
}

func (t *TUNActor) startReader(ctx actor.Context) {
	if t.done != nil {
		return
	}
	if err := t.dev.SetReadDeadline(time.Time{}); err != nil {
		t.cfg.Logger.Error("failed to clear TUN read deadline", slog.Any("err", err))
	}
	t.done, t.stop = make(chan struct{}), make(chan struct{})
	go readTUN(t.dev, ctx.ActorSystem(), ctx.Self(), t.cfg.router, t.stop, t.done)
}

// stopReader unblocks the reader with a deadline and waits for it, so no
// two readers ever share the device.
func (t *TUNActor) stopReader() {
	if t.done == nil {
		return
	}
	close(t.stop)
	if err := t.dev.SetReadDeadline(time.Now()); err != nil && !errors.Is(err, tun.ErrClosed) {
		t.cfg.Logger.Error("failed to set TUN read deadline", slog.Any("err", err))
	}
	<-t.done
	t.done = nil
}

func (t *TUNActor) onReaderStopped(ctx actor.Context, err error) {
	t.done = nil
	if errors.Is(err, tun.ErrClosed) || errors.Is(err, os.ErrClosed) {
		t.cfg.Logger.Info("TUN device closed; reader stopped")
		return
	}
	t.cfg.Logger.Error("TUN reader failed; restarting it", slog.Any("err", err))
	self, sys := ctx.Self(), ctx.ActorSystem()
	time.AfterFunc(readerRetry, func() { sys.Root.Send(self, &restartReader{}) })
}

// readTUN is the TUN actor's reader goroutine. It exits on any read error,
// reporting it unless the error is the deadline its owner set to stop it.
// A panic here is not supervised by protoactor, so it is turned into an
// error for the actor.
func readTUN(dev tun.Device, sys *actor.ActorSystem, self, router *actor.PID, stop, done chan struct{}) {
	defer close(done)
	budget := messages.NewBudget(routerBudget)
	err := readLoop(dev, func(b *messages.ToClient) error {
		if !budget.Acquire(&b.Batch, stop) {
			b.Release()
			return os.ErrDeadlineExceeded // stopped by the owner
		}
		sys.Root.Send(router, b)
		return nil
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		sys.Root.Send(self, &readerStopped{err: err})
	}
}

func readLoop(dev tun.Device, send func(*messages.ToClient) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in TUN reader: %v", r)
		}
	}()
	size := max(dev.MTU(), messages.SmallPacketBuf)
	bufs := make([][]byte, messages.BatchCap)
	sizes := make([]int, messages.BatchCap)
	for i := range bufs {
		bufs[i] = messages.GetPacketBuf(size)
	}
	defer func() {
		for _, b := range bufs {
			messages.ReleasePacket(b)
		}
	}()
	for {
		n, err := dev.Read(bufs, sizes)
		if n > 0 {
			b := messages.NewToClient()
			for i := range n {
				b.Packets = append(b.Packets, bufs[i][:sizes[i]])
				bufs[i] = messages.GetPacketBuf(size)
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
