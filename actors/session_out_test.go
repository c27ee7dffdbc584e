package actors

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// The control lane: never dropped, coalesced per kind, and ahead of the
// data lane.

func TestControlLaneQueuesWhenDataIsFull(t *testing.T) {
	var queued atomic.Int64
	q := newOutQueue(2*wire.BatchCap, &queued)
	full := 0
	for {
		b := messages.NewToClient()
		b.AppendCopy(ping(inetHost, serverAddr, 1))
		if !q.offer(b) {
			b.Release()
			break
		}
		full++
	}
	for _, tc := range []struct {
		name string
		kind controlKind
		want bool
	}{
		{"reply", controlReply, true},
		{"heartbeat", controlHeartbeat, true},
		{"unsupported", controlUnsupported, true},
		{"second heartbeat while one is pending", controlHeartbeat, false},
	} {
		if got := q.control(tc.kind, heartbeatFrame); got != tc.want {
			t.Errorf("%s with %d data batches queued: queued=%v, want %v", tc.name, full, got, tc.want)
		}
	}
	if got := q.take(<-q.ctrl); got == nil {
		t.Fatal("took no frame")
	}
	if !q.control(controlReply, heartbeatFrame) {
		t.Error("a reply after the pending one was taken was coalesced")
	}
}

// A heartbeat queued behind a full data lane goes out before every data
// batch still in the lane: at most the batches the writer had already
// taken precede it.
func TestHeartbeatOvertakesQueuedData(t *testing.T) {
	const batches = 10
	var queued atomic.Int64
	q := newOutQueue(batches*wire.BatchCap, &queued)
	for i := range batches {
		b := messages.NewToClient()
		for range wire.BatchCap {
			pkt := make([]byte, 1400)
			binary.BigEndian.PutUint32(pkt, uint32(i))
			b.AppendCopy(pkt)
		}
		if !q.offer(b) {
			t.Fatalf("batch %d refused", i)
		}
	}
	srv, cli := net.Pipe()
	defer cli.Close()
	sys := quietSystem()
	defer sys.Shutdown()
	owner := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {})) // hears of the write error at the end
	var wg sync.WaitGroup
	q.attach(&clientWriter{conn: srv, stall: wait, m: &Metrics{}, sys: sys, self: owner, wg: &wg})
	q.wake()
	q.control(controlHeartbeat, heartbeatFrame)

	dec := wire.NewDecoder(cli)
	defer dec.Release()
	// The writer may have taken two batches before the heartbeat was
	// queued: a 128 KiB buffer holds one 1400-byte batch and part of the
	// next before it must write.
	for n := 0; ; n++ {
		f, err := dec.Next()
		if err != nil {
			t.Fatalf("after %d frames: %v", n, err)
		}
		if f.Type == wire.TypeHeartbeat {
			break
		}
		if batch := binary.BigEndian.Uint32(f.Payload); batch >= 2 {
			t.Fatalf("a packet of batch %d went out before the heartbeat", batch)
		}
	}
	q.close()
	_ = cli.Close()
	wg.Wait()
}
