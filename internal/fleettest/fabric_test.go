//go:build linux

package fleettest

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
)

// echoOnce accepts one connection on ln, copies it back and reports the
// peer's address; the goroutine ends when the peer closes its side.
func echoOnce(t *testing.T, ln net.Listener) <-chan netip.Addr {
	t.Helper()
	from := make(chan netip.Addr, 1)
	go func() {
		defer close(from)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		from <- conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		_ = conn.SetDeadline(time.Now().Add(Wait))
		_, _ = io.Copy(conn, conn)
	}()
	return from
}

// exchange sends msg over conn, half-closes it and returns what came back.
func exchange(t *testing.T, conn net.Conn, msg string) string {
	t.Helper()
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(Wait))
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatalf("write to %v: %v", conn.RemoteAddr(), err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("close write to %v: %v", conn.RemoteAddr(), err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read from %v: %v", conn.RemoteAddr(), err)
	}
	return string(got)
}

func TestFabricCarriesTCPBetweenAttachedNamespaces(t *testing.T) {
	netnstest.RequireRoot(t)
	f := NewFabric(t, "fab")
	aAddr, bAddr := netip.MustParseAddr("2001:db8:f::a"), netip.MustParseAddr("2001:db8:f::b")
	a, b := netnstest.New(t, "fab-a"), netnstest.New(t, "fab-b")
	aIf := f.Attach(t, a, netip.PrefixFrom(aAddr, 64))
	f.Attach(t, b, netip.PrefixFrom(bAddr, 64))
	if _, err := a.Netlink().LinkByName(aIf); err != nil {
		t.Fatalf("Attach returned %q, which is not a link in %s: %v", aIf, a.Name, err)
	}

	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp6", netip.AddrPortFrom(bAddr, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", b.Name, err)
	}
	defer ln.Close()

	tests := []struct {
		name string
		dial func() (net.Conn, error)
		from netip.Addr
	}{
		{"namespace to namespace", func() (conn net.Conn, err error) {
			err = a.Do(func() error {
				conn, err = net.DialTimeout("tcp6", ln.Addr().String(), Wait)
				return err
			})
			return conn, err
		}, aAddr},
		{"test process through the hub", func() (net.Conn, error) {
			ctx, cancel := context.WithTimeout(t.Context(), Wait)
			defer cancel()
			return f.DialContext(ctx, "tcp", ln.Addr().String())
		}, f.HubAddr()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := echoOnce(t, ln)
			conn, err := tt.dial()
			if err != nil {
				t.Fatalf("dial %v: %v", ln.Addr(), err)
			}
			if got := exchange(t, conn, "over the fabric"); got != "over the fabric" {
				t.Errorf("echo returned %q, want %q", got, "over the fabric")
			}
			if got := <-from; got != tt.from {
				t.Errorf("connection came from %v, want %v", got, tt.from)
			}
		})
	}
}
