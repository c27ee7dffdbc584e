package messages

import (
	"sync"

	"github.com/4over6d/4over6d/messages/wire"
)

var (
	fromPool = sync.Pool{New: func() any { return &FromClient{Batch: Batch{Packets: make([][]byte, 0, wire.BatchCap)}} }}
	toPool   = sync.Pool{New: func() any { return &ToClient{Batch{Packets: make([][]byte, 0, wire.BatchCap)}} }}
)

// Batch carries up to wire.BatchCap packets in one actor message. Ownership of
// the batch and of every packet buffer in it moves with the message: the
// receiver either passes it on or calls Release. The two directions are
// distinct message types (FromClient, ToClient) so an actor's type switch
// says where a batch came from.
type Batch struct {
	Packets [][]byte
	budget  Budget // the producer's token, if it took one
}

// FromClient is a batch of IPv4 packets a client sent in 102 frames, on its
// way from a session to the TUN device. It may hold a token of its
// session's Budget, given back when the batch is released, so a client
// cannot have more than a few batches waiting for the device.
type FromClient struct{ Batch }

// Budget bounds the batches a producer has in flight. A session's reader
// takes a token per batch towards the TUN and blocks while none is left,
// so a client that sends faster than the device accepts is slowed by TCP
// flow control instead of queueing without bound in the server. The TUN
// reader does the same towards the Router, so a flood from the IPv4 side
// waits in the kernel's TUN queue (and is dropped there, like at any
// router) rather than in an unbounded mailbox.
type Budget chan struct{}

// NewBudget allows n batches in flight.
func NewBudget(n int) Budget { return make(Budget, n) }

// Acquire takes a token for b, waiting until one is free or done is
// closed; it reports whether it got one.
func (bu Budget) Acquire(b *Batch, done <-chan struct{}) bool {
	select {
	case bu <- struct{}{}:
		b.budget = bu
		return true
	case <-done:
		return false
	}
}

// ToClient is a batch of IPv4 packets read from the TUN device, on its way
// through the Router to the session that owns their destination.
type ToClient struct{ Batch }

// NewFromClient borrows an empty client-side batch from its pool.
func NewFromClient() *FromClient { return fromPool.Get().(*FromClient) }

// NewToClient borrows an empty TUN-side batch from its pool.
func NewToClient() *ToClient { return toPool.Get().(*ToClient) }

// Release returns the packets and the batch to their pools, and the
// batch's budget token to its producer.
func (b *FromClient) Release() {
	b.giveBack()
	b.releasePackets()
	fromPool.Put(b)
}

// Release returns the packets and the batch to their pools, and the
// batch's budget token to its producer.
func (b *ToClient) Release() {
	b.giveBack()
	b.releasePackets()
	toPool.Put(b)
}

// Recycle returns an emptied batch to its pool, and its budget token,
// after its packets were moved into other batches (the Router's split by
// destination).
func (b *ToClient) Recycle() {
	b.giveBack()
	clear(b.Packets)
	b.Packets = b.Packets[:0]
	toPool.Put(b)
}

// TryAcquire takes a token for b if one is free, without waiting, and
// reports whether it did; a nil Budget always succeeds. The Router uses it
// towards sessions, which it must never wait for.
func (bu Budget) TryAcquire(b *Batch) bool {
	if bu == nil {
		return true
	}
	select {
	case bu <- struct{}{}:
		b.budget = bu
		return true
	default:
		return false
	}
}

// Settle gives the batch's budget token back while the batch itself lives
// on: a session calls it when it takes a batch from its mailbox into its
// own bounded queue.
func (b *Batch) Settle() { b.giveBack() }

// giveBack returns the batch's budget token, if it holds one.
func (b *Batch) giveBack() {
	if b.budget != nil {
		<-b.budget
		b.budget = nil
	}
}

// Full reports whether the batch has reached wire.BatchCap, so a producer knows
// when to send it on.
func (b *Batch) Full() bool { return len(b.Packets) >= wire.BatchCap }

// AppendCopy copies pkt into a pooled buffer and adds it to the batch.
func (b *Batch) AppendCopy(pkt []byte) {
	buf := wire.GetPacketBuf(len(pkt))
	copy(buf, pkt)
	b.Packets = append(b.Packets, buf)
}

// Bytes is the total payload size, for byte counters.
func (b *Batch) Bytes() int {
	n := 0
	for _, p := range b.Packets {
		n += len(p)
	}
	return n
}

func (b *Batch) releasePackets() {
	for i, p := range b.Packets {
		wire.ReleasePacket(p)
		b.Packets[i] = nil
	}
	b.Packets = b.Packets[:0]
}
