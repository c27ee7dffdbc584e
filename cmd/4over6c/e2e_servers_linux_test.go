package main

// End-to-end test of a -server list, with the real binaries in the
// namespaces of e2e_linux_test.go.

import (
	"net/netip"
	"syscall"
	"testing"
)

// TestE2ESeveralServers gives the client a dead and a live server: it must
// reach the live one in either order, log why the dead one failed, and
// come back to the live one after it restarted.
func TestE2ESeveralServers(t *testing.T) {
	live := netip.AddrPortFrom(serverV6(0), 5678).String()
	refusing := netip.AddrPortFrom(serverV6(0), 5679).String()                              // nothing listens: RST
	unreachable := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:1::99"), 5678).String() // no such host: neighbour discovery fails
	tests := []struct {
		name, dead string
		deadFirst  bool
		reason     string
	}{
		{"refusing server first", refusing, true, "connection refused"},
		{"unreachable server first", unreachable, true, "no route to host"},
		{"live server first, restarted", refusing, false, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp := newTopology(t, 1)
			srv := tp.runServer(t)
			list := tt.dead + "," + live
			if !tt.deadFirst {
				list = live + "," + tt.dead
			}
			c := tp.runClient(t, 0, "-server", list)
			waitUntil(t, 2*e2eStart, func() bool { return c.logs.hasLine("msg=connected", "server="+live) },
				"the client to connect to the live server")
			if tt.deadFirst && (!c.logs.hasLine(`msg="connect failed"`, "server="+tt.dead, tt.reason) ||
				!c.logs.hasLine(`msg="trying server"`, "server="+live, "previous="+tt.dead)) {
				t.Errorf("the dead server's failure (%s) and the move to the live one are not logged:\n%s", tt.reason, c.logs.String())
			}
			if !tt.deadFirst {
				// With the live server gone the client moves on to the
				// dead one, and back once the server is up again.
				if _, err := srv.stop(t, syscall.SIGTERM); err != nil {
					t.Fatalf("server exit: %v", err)
				}
				waitUntil(t, 2*e2eStart, func() bool { return c.logs.hasLine(`msg="connect failed"`, "server="+tt.dead, tt.reason) },
					"the client to try the other server")
				tp.runServer(t)
				waitUntil(t, 2*e2eStart, func() bool { return c.logs.count("msg=connected") == 2 }, "the client to reconnect")
				if !c.logs.hasLine("msg=connected", "server="+live) || c.logs.hasLine("msg=connected", "server="+tt.dead) {
					t.Errorf("connected to the wrong server:\n%s", c.logs.String())
				}
			}
			if err := ping(t, tp.clients[0], 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}
