package main

import (
	"strings"
	"syscall"
	"testing"
)

// After a kill -9 the nftables table stays behind (the TUN goes with the
// process's file descriptor); `4over6d cleanup` removes it, and refuses
// while a server is running, leaving that server's rules alone.
func TestCleanupAfterKill(t *testing.T) {
	tp := newTopology(t)
	s := tp.startServer(t, "-tun", "e2etun1")
	hasTable := func() bool { return strings.Contains(tp.srv.Run(t, "nft", "list", "tables"), "4over6d") }

	refused := tp.srv.Command(t.Context(), binary(t), "cleanup", "-tun", "e2etun1")
	out, err := refused.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") || !hasTable() {
		t.Fatalf("cleanup with a server running: %v, %q, table kept: %v; want a refusal naming the TUN in use", err, out, hasTable())
	}

	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.done
	if !hasTable() {
		t.Fatal("no stale table after kill -9: nothing for cleanup to prove")
	}
	if out := tp.srv.Run(t, binary(t), "cleanup", "-tun", "e2etun1"); !strings.Contains(out, "removed") {
		t.Fatalf("cleanup said %q", out)
	}
	if hasTable() {
		t.Fatal("table still there after cleanup")
	}
	if _, err := tp.srv.Netlink().LinkByName("e2etun1"); err == nil {
		t.Fatal("TUN still there after cleanup")
	}
	tp.srv.Run(t, binary(t), "cleanup", "-tun", "e2etun1") // nothing left: still fine
}
