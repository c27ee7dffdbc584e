package main

// Packet path of one session, once the handshake has leased an address:
//
//  1. TUN to server: pumpFromTUN reads up to BatchCap packets per
//     Device.Read, frames each as a 102 into one reused buffer and sends the
//     batch with a single conn.Write.
//  2. Server to TUN: pumpToTUN decodes frames (the decoder reads in large
//     chunks); 103 payloads are checked, copied into pooled buffers and
//     written to the TUN with one Device.Write per batch, flushed as soon as
//     the decoder has no complete frame left. A 104 refreshes liveness.
//  3. sendHeartbeats sends a 104 every heartbeat; watchLiveness declares
//     the link dead when no 104 has arrived for timeout.
//
// The first stage to fail ends the session: the connection is closed and
// the TUN read deadline set, which stops the others, and the first error
// is the reason the client logs. The TUN itself stays open for the next
// session.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun"
)

// Reasons a session ends, matched with errors.Is by the reconnect loop and
// the tests.
var (
	// errProtocol marks a server that broke the wire protocol; the
	// connection cannot be trusted any more.
	errProtocol = errors.New("protocol violation by server")
	// errDeadLink marks a server that stopped sending heartbeats.
	errDeadLink = errors.New("no heartbeat from server")
	// errDevice marks a TUN failure, after which the device is replaced.
	errDevice = errors.New("TUN device failed")
	// errServerClosed marks an orderly close by the server.
	errServerClosed = errors.New("server closed the connection")
)

// sessionConfig holds the timers of a session.
type sessionConfig struct {
	heartbeat        time.Duration
	timeout          time.Duration
	handshakeTimeout time.Duration
}

// tunnelStats counts a session's packets for the disconnect log line.
type tunnelStats struct {
	sent, received, dropped atomic.Uint64
}

// tunnel moves packets between one connection and the TUN device. It owns
// the goroutines it starts in run and waits for them before returning.
type tunnel struct {
	cfg   sessionConfig
	conn  net.Conn
	dec   *wire.Decoder
	dev   tun.Device
	log   *slog.Logger
	stats tunnelStats
	// writeMu keeps whole frames from interleaving on the connection.
	writeMu sync.Mutex
	// start and lastHeartbeat (nanoseconds since start) track liveness on
	// the monotonic clock.
	start         time.Time
	lastHeartbeat atomic.Int64
}

func newTunnel(cfg sessionConfig, conn net.Conn, dec *wire.Decoder, dev tun.Device, log *slog.Logger) *tunnel {
	return &tunnel{cfg: cfg, conn: conn, dec: dec, dev: dev, log: log, start: time.Now()}
}

// run moves packets until ctx ends or a stage fails, and returns why the
// session ended: context.Cause of the session's context.
func (t *tunnel) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := t.dev.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("%w: %w", errDevice, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { cancel(t.pumpFromTUN()) })
	wg.Go(func() { cancel(t.pumpToTUN()) })
	wg.Go(func() { cancel(t.sendHeartbeats(ctx)) })
	t.watchLiveness(ctx, cancel)
	_ = t.conn.Close()
	// An error here means the device is closed, which stops the reader too.
	_ = t.dev.SetReadDeadline(time.Now())
	wg.Wait()
	return context.Cause(ctx)
}

// sendHeartbeats sends a 104 every heartbeat until ctx ends. It runs on
// its own goroutine so that a write stalled behind a full send buffer never
// delays the liveness check.
func (t *tunnel) sendHeartbeats(ctx context.Context) error {
	ticker := time.NewTicker(t.cfg.heartbeat)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-ticker.C:
			if err := t.write(wire.Heartbeat); err != nil {
				return err
			}
		}
	}
}

// watchLiveness returns once ctx is done, cancelling it first itself if no
// 104 has arrived for timeout.
func (t *tunnel) watchLiveness(ctx context.Context, cancel context.CancelCauseFunc) {
	check := time.NewTimer(t.cfg.timeout)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C:
			silent := t.sinceHeartbeat()
			if silent >= t.cfg.timeout {
				cancel(fmt.Errorf("%w for %v", errDeadLink, silent.Round(time.Millisecond)))
				return
			}
			check.Reset(t.cfg.timeout - silent)
		}
	}
}

func (t *tunnel) sinceHeartbeat() time.Duration {
	return time.Since(t.start) - time.Duration(t.lastHeartbeat.Load())
}

// write sends whole frames. The write deadline bounds how long a server
// that stopped reading can stall the client before the session ends.
func (t *tunnel) write(frames []byte) error {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if err := t.conn.SetWriteDeadline(time.Now().Add(t.cfg.timeout)); err != nil {
		return fmt.Errorf("failed to set write deadline: %w", err)
	}
	if _, err := t.conn.Write(frames); err != nil {
		return fmt.Errorf("failed to send to server: %w", err)
	}
	return nil
}

// pumpFromTUN frames every packet the kernel routes into the TUN as a 102
// and sends each batch in one write. It returns only on failure.
func (t *tunnel) pumpFromTUN() error {
	mtu := t.dev.MTU()
	bufs, sizes := make([][]byte, wire.BatchCap), make([]int, wire.BatchCap)
	for i := range bufs {
		bufs[i] = make([]byte, mtu)
	}
	out := make([]byte, 0, wire.BatchCap*(wire.HeaderLen+mtu))
	for {
		n, err := t.dev.Read(bufs, sizes)
		if err != nil {
			return fmt.Errorf("%w: %w", errDevice, err)
		}
		out = out[:0]
		for i := range n {
			out = t.appendDataRequest(out, bufs[i][:sizes[i]])
		}
		if len(out) == 0 {
			continue
		}
		if err := t.write(out); err != nil {
			return err
		}
	}
}

// appendDataRequest frames pkt unless it is not IPv4; IPv6 is disabled on
// the TUN, so anything else is an anomaly to count, not to send.
func (t *tunnel) appendDataRequest(out, pkt []byte) []byte {
	if len(pkt) == 0 || pkt[0]>>4 != 4 {
		t.stats.dropped.Add(1)
		t.log.Debug("dropped non-IPv4 packet from TUN", slog.Int("len", len(pkt)))
		return out
	}
	t.stats.sent.Add(1)
	return wire.AppendFrame(out, wire.TypeDataRequest, pkt)
}

// pumpToTUN reads the server's frames until the connection fails or the
// server breaks the protocol.
func (t *tunnel) pumpToTUN() error {
	batch := make([][]byte, 0, wire.BatchCap)
	defer func() { releaseAll(batch) }()
	for {
		f, err := t.dec.Next()
		if err != nil {
			return readError(err)
		}
		switch f.Type {
		case wire.TypeDataReply:
			if pkt := t.acceptDataReply(f.Payload); pkt != nil {
				buf := wire.GetPacketBuf(len(pkt))
				copy(buf, pkt)
				batch = append(batch, buf)
			}
		case wire.TypeHeartbeat:
			t.lastHeartbeat.Store(int64(time.Since(t.start)))
		case wire.TypeIPReply:
			t.log.Debug("ignored repeated address reply")
		default:
			return fmt.Errorf("%w: unexpected frame type %d", errProtocol, f.Type)
		}
		if len(batch) == wire.BatchCap || len(batch) > 0 && !t.dec.Buffered() {
			err := t.writeTUN(batch)
			releaseAll(batch)
			batch = batch[:0]
			if err != nil {
				return err
			}
		}
	}
}

// acceptDataReply returns the packet in a 103 payload trimmed to its total
// length, or nil for a payload the TUN must not get: not IPv4, truncated,
// or larger than the MTU.
func (t *tunnel) acceptDataReply(payload []byte) []byte {
	pkt, _, _, err := wire.ParseIPv4(payload)
	if err == nil && len(pkt) > t.dev.MTU() {
		err = fmt.Errorf("packet of %d bytes exceeds MTU %d", len(pkt), t.dev.MTU())
	}
	if err != nil {
		t.stats.dropped.Add(1)
		t.log.Debug("dropped invalid packet from server", slog.Int("len", len(payload)), slog.Any("err", err))
		return nil
	}
	t.stats.received.Add(1)
	return pkt
}

func (t *tunnel) writeTUN(batch [][]byte) error {
	if _, err := t.dev.Write(batch); err != nil {
		return fmt.Errorf("%w: %w", errDevice, err)
	}
	return nil
}

func releaseAll(batch [][]byte) {
	for i, p := range batch {
		wire.ReleasePacket(p)
		batch[i] = nil
	}
}

// readError turns a decoder error into a session end reason.
func readError(err error) error {
	var tooLarge *wire.FrameTooLargeError
	switch {
	case errors.As(err, &tooLarge):
		return fmt.Errorf("%w: %w", errProtocol, err)
	case errors.Is(err, io.EOF):
		return errServerClosed
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w in the middle of a frame", errServerClosed)
	}
	return fmt.Errorf("failed to read from server: %w", err)
}
