package main

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/4over6d/4over6d/actors"
)

// A fleet node that cannot join (nothing answers at -etcd) does not
// start: exit status 1, a last line naming the etcd endpoints and the
// node, and nothing left on the host (TUN, VXLAN device, nftables table).
func TestFleetJoinFailureExits1(t *testing.T) {
	tp := newTopology(t)
	const tunName = "e2efleet0"
	etcd := "http://[" + srvV6.String() + "]:2379" // in the server's namespace, where nothing listens
	// A server that starts anyway is killed, and the test fails on it.
	ctx, cancel := context.WithTimeout(context.Background(), 4*e2eWait)
	defer cancel()
	out, err := tp.srv.Command(ctx, binary(t), "-listen", "["+srvV6.String()+"]:5678", "-pool", e2ePool, "-dns", e2eDNS,
		"-tun", tunName, "-etcd", etcd, "-node", "e2e-n1", "-etcd-ttl", "2s").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1; output:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"4over6d:", "failed to join the fleet", etcd, `"e2e-n1"`} {
		if !strings.Contains(last, want) {
			t.Fatalf("last line %q lacks %q; output:\n%s", last, want, out)
		}
	}
	for _, name := range []string{tunName, actors.DefaultOverlayName} {
		if _, err := tp.srv.Netlink().LinkByName(name); err == nil {
			t.Errorf("%s left behind", name)
		}
	}
	if out := tp.srv.Run(t, "nft", "list", "tables"); strings.Contains(out, natTable) {
		t.Errorf("nftables table left behind: %q", out)
	}
}
