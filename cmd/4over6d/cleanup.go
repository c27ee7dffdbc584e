package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/tun"
)

// runCleanup is `4over6d cleanup`: after a server was killed with SIGKILL
// (or crashed before its shutdown ran), it removes what that server left
// on the host: its nftables table, a fleet node's VXLAN device and, if one
// was made persistent, its TUN. It refuses while a server holds the TUN,
// since then all of them are that server's.
func runCleanup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("4over6d cleanup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("tun", defaultTUN, "TUN device name the server used")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "4over6d cleanup: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := tun.CheckPrivileges(); err != nil {
		fmt.Fprintln(stderr, "4over6d cleanup:", err)
		return 1
	}
	if err := tun.RemoveStaleLink(*name); err != nil {
		fmt.Fprintf(stderr, "4over6d cleanup: %v; nothing removed (stop the running server instead)\n", err)
		return 1
	}
	if err := tun.RemoveStaleVXLAN(actors.DefaultOverlayName); err != nil {
		fmt.Fprintln(stderr, "4over6d cleanup:", err)
		return 1
	}
	if err := tun.RemoveNAT(natTable); err != nil {
		fmt.Fprintln(stderr, "4over6d cleanup:", err)
		return 1
	}
	fmt.Fprintf(stdout, "removed nftables table %s, any stale TUN %s and any fleet VXLAN device %s (if they existed)\n", natTable, *name, actors.DefaultOverlayName)
	return 0
}
