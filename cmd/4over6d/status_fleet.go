package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/4over6d/4over6d/actors"
)

// shownBlocks is how many of a node's blocks `status -fleet` lists before
// it counts the rest (a node of a large pool can hold hundreds; -json has
// them all).
const shownBlocks = 3

// stateNotes explain the fleet states to an operator.
var stateNotes = map[string]string{
	"read-only": " (etcd cannot be reached safely: new sessions are refused, existing ones keep running)",
}

// printFleet renders `4over6d status -fleet`: a header and one row per
// node, this node marked with *.
func printFleet(w io.Writer, st *actors.FleetStatus, now time.Time) {
	fmt.Fprintf(w, "fleet: %s\n  state: %s%s\n  this node: %s\n  nodes: %d\n\n", st.Pool, st.State, stateNotes[st.State], st.Self, len(st.Nodes))
	if len(st.Nodes) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tADDRESS\tUP SINCE\tBLOCKS\tCLAIMS\tSESSIONS\tLEASED")
	for _, n := range st.Nodes {
		mark := " "
		if n.Self {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\t%d\t%d\t%d\n", mark, n.Name, orDash(n.Addr), upSince(n.UpSince, now),
			blockList(n.Blocks), len(n.Claims), n.Sessions, n.Leased)
	}
	_ = tw.Flush()
}

func orDash(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func upSince(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(now.Sub(t)) + " ago"
}

// blockList shows the first shownBlocks blocks and counts the others.
func blockList(blocks []netip.Prefix) string {
	if len(blocks) == 0 {
		return "-"
	}
	var parts []string
	for _, b := range blocks[:min(len(blocks), shownBlocks)] {
		parts = append(parts, b.String())
	}
	s := strings.Join(parts, ", ")
	if more := len(blocks) - shownBlocks; more > 0 {
		s += fmt.Sprintf(" (+%d more)", more)
	}
	return s
}
