package actors

import (
	"bytes"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// Tests of a multi-queue TUN: one TUN actor per queue, sessions pinned to
// one queue each, every queue's reader feeding the Router.

const testQueueCount = 3

// stopCountingDevice counts the reader stops (read deadlines in the past
// or now) of one queue, so a test can tell which TUN actors restarted.
type stopCountingDevice struct {
	*tuntest.Device
	stops atomic.Int32
}

func (d *stopCountingDevice) SetReadDeadline(t time.Time) error {
	if !t.IsZero() {
		d.stops.Add(1)
	}
	return d.Device.SetReadDeadline(t)
}

// newQueuesHarness starts an engine on testQueueCount fake queues.
func newQueuesHarness(t *testing.T) (*harness, []*stopCountingDevice) {
	t.Helper()
	devs := make([]*stopCountingDevice, testQueueCount)
	queues := make([]tun.Device, testQueueCount)
	for i := range devs {
		devs[i] = &stopCountingDevice{Device: tuntest.New("fakeq", 1500)}
		queues[i] = devs[i]
	}
	h := newHarness(t, func(c *Config) { c.Device, c.Queues = queues[0], queues })
	h.dev = devs[0].Device
	t.Cleanup(func() {
		for _, d := range devs {
			_ = d.Close()
		}
	})
	return h, devs
}

// writtenOn waits for want on any queue and says which one took it.
func writtenOn(t *testing.T, devs []*stopCountingDevice, want []byte) int {
	t.Helper()
	deadline := time.After(wait)
	for {
		for q, d := range devs {
			select {
			case p := <-d.Written():
				if bytes.Equal(p, want) {
					return q
				}
			default:
			}
		}
		select {
		case <-deadline:
			t.Fatalf("packet %x reached no queue", want)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestSessionsStayOnOneQueueAndSpread(t *testing.T) {
	h, devs := newQueuesHarness(t)
	const clients, pings = 6, 5
	used := make(map[int]int)
	for range clients {
		c := h.connect()
		queue := -1
		for seq := range uint16(pings) {
			p := ping(c.addr, inetHost, seq)
			c.send(wire.TypeDataRequest, p)
			q := writtenOn(t, devs, p)
			if queue >= 0 && q != queue {
				t.Fatalf("session %v wrote ping %d to queue %d, earlier ones to %d", c.addr, seq, q, queue)
			}
			queue = q
		}
		if want := h.srv.cfg.tunFor(c.addr); !want.Equal(h.srv.cfg.tuns[queue]) {
			t.Errorf("session %v used queue %d, tunFor says %v", c.addr, queue, want)
		}
		used[queue]++
	}
	if len(used) != testQueueCount {
		t.Errorf("%d sessions used queues %v, want all %d used", clients, used, testQueueCount)
	}
}

// awaitQueueDownlink injects a packet for c on one queue until c gets it.
func awaitQueueDownlink(t *testing.T, dev *stopCountingDevice, c *client, seq uint16) {
	t.Helper()
	marker := tuntest.Pong(inetHost, c.addr, 0xbeef, seq, []byte("marker"))
	dev.Inject(marker)
	for {
		f := c.next(wait)
		if f.Type == wire.TypeDataReply && bytes.Equal(f.Payload, marker) {
			return
		}
	}
}

func TestEveryQueueFeedsTheRouter(t *testing.T) {
	h, devs := newQueuesHarness(t)
	c := h.connect()
	for q, d := range devs {
		awaitQueueDownlink(t, d, c, uint16(q))
	}
}

func TestPanicInOneQueueRestartsOnlyIt(t *testing.T) {
	h, devs := newQueuesHarness(t)
	c := h.connect()
	h.srv.system.Root.Send(h.srv.cfg.tuns[1], &messages.InjectPanic{Reason: "test"})
	eventually(t, wait, "the TUN actor of queue 1 to fail", func() bool { return h.srv.Metrics().Failures(KindTUN) == 1 })
	if err := h.srv.Health(); err != nil { // every queue's actor answers
		t.Fatal(err)
	}
	for q, d := range devs {
		awaitQueueDownlink(t, d, c, uint16(10+q))
	}
	h.awaitUplinkOnQueues(devs, c)
	for q, d := range devs {
		want := int32(0)
		if q == 1 {
			want = 1
		}
		if n := d.stops.Load(); n != want {
			t.Errorf("queue %d: reader stopped %d times, want %d", q, n, want)
		}
	}
}

// awaitUplinkOnQueues checks that c's uplink still reaches its queue.
func (h *harness) awaitUplinkOnQueues(devs []*stopCountingDevice, c *client) {
	h.t.Helper()
	p := ping(c.addr, inetHost, 99)
	c.send(wire.TypeDataRequest, p)
	q := writtenOn(h.t, devs, p)
	if !h.srv.cfg.tuns[q].Equal(h.srv.cfg.tunFor(c.addr)) {
		h.t.Errorf("uplink of %v on queue %d, not on its own", c.addr, q)
	}
}

func TestTUNForIsStable(t *testing.T) {
	tests := []struct {
		queues int
		addr   string
		want   int
	}{
		{1, "192.0.2.7", 0},
		{3, "192.0.2.2", 1}, // 0xc0000202 % 3
		{3, "192.0.2.3", 2},
		{3, "192.0.2.4", 0},
		{4, "192.0.2.9", 1},
	}
	for _, tt := range tests {
		queues := make([]tun.Device, tt.queues)
		for i := range queues {
			queues[i] = tuntest.New("q", 1500)
		}
		cfg := newShared(Config{Pool: testPool, Device: queues[0], Queues: queues}.withDefaults(), quietSystem(), "p")
		addr := netip.MustParseAddr(tt.addr)
		if got := cfg.tunFor(addr); !got.Equal(cfg.tuns[tt.want]) || !cfg.tunFor(addr).Equal(got) {
			t.Errorf("%d queues: tunFor(%s) = %v, want %v", tt.queues, tt.addr, got, cfg.tuns[tt.want])
		}
	}
}

func TestConfigQueues(t *testing.T) {
	a, b := tuntest.New("a", 1500), tuntest.New("b", 1500)
	tests := []struct {
		name    string
		cfg     Config
		wantLen int
		wantErr bool
	}{
		{"device only", Config{Device: a}, 1, false},
		{"queues only", Config{Queues: []tun.Device{a, b}}, 2, false},
		{"both", Config{Device: a, Queues: []tun.Device{a, b}}, 2, false},
		{"device not first", Config{Device: b, Queues: []tun.Device{a, b}}, 2, true},
		{"a nil queue", Config{Device: a, Queues: []tun.Device{a, nil}}, 2, true},
	}
	for _, tt := range tests {
		c := tt.cfg
		c.Listener, c.Pool, c.DNS = &net.TCPListener{}, testPool, testDNS
		c = c.withDefaults()
		if len(c.Queues) != tt.wantLen || c.Device == nil {
			t.Errorf("%s: %d queues, device %v; want %d and a device", tt.name, len(c.Queues), c.Device, tt.wantLen)
		}
		if err := c.validate(); (err != nil) != tt.wantErr {
			t.Errorf("%s: validate = %v, want error %v", tt.name, err, tt.wantErr)
		}
	}
}
