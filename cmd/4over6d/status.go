package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/4over6d/4over6d/actors"
)

// runStatus is `4over6d status`: it reads /status (with -fleet,
// /api/v1/fleet) from a running server's admin endpoint and prints it like
// `wg show`, or passes the JSON through.
func runStatus(args []string, stdout, stderr io.Writer) int {
	c := newCommand("status", "[-admin ADDR] [-token-file F] [-json] [-fleet]", stdout, stderr)
	raw := c.fs.Bool("json", false, "print the JSON as served")
	fleet := c.fs.Bool("fleet", false, "show the nodes of the fleet this server is one of (-etcd) instead of its sessions")
	if _, code, ok := c.parse(args, 0); !ok {
		return code
	}
	cl, err := c.cf.client()
	if err != nil {
		return c.usageError("%v", err)
	}
	path := "/status"
	if *fleet {
		path = "/api/v1/fleet"
	}
	body, err := cl.send(http.MethodGet, path, nil)
	if err != nil {
		fmt.Fprintf(stderr, "4over6d status: %v\n", err)
		return 1
	}
	if *raw {
		_, _ = stdout.Write(body)
		return 0
	}
	if *fleet {
		var st actors.FleetStatus
		if err := json.Unmarshal(body, &st); err != nil {
			fmt.Fprintf(stderr, "4over6d status: bad answer from %s: %v\n", c.cf.admin, err)
			return 1
		}
		printFleet(stdout, &st, time.Now())
		return 0
	}
	var doc statusDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		fmt.Fprintf(stderr, "4over6d status: bad answer from %s: %v\n", c.cf.admin, err)
		return 1
	}
	printStatus(stdout, &doc, time.Now())
	return 0
}

// printStatus renders the status as a header and one row per session.
func printStatus(w io.Writer, d *statusDoc, now time.Time) {
	tunName := d.TUN
	if d.TUNQueues > 1 {
		tunName = fmt.Sprintf("%s (%d queues)", d.TUN, d.TUNQueues)
	}
	fmt.Fprintf(w, "interface: %s\n  listening: %s\n  pool: %s (%d of %d leased)\n  sessions: %d\n\n",
		tunName, d.Listen, d.Pool, d.Leased, d.Size, len(d.Sessions))
	if len(d.Sessions) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tADDRESS\tCONNECTED\tLAST HEARD\tRECEIVED\tSENT\tDROPS\tQUEUED")
	for _, s := range d.Sessions {
		addr := s.Addr
		if addr == "" {
			addr = "(none)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s (%d pkts)\t%s (%d pkts)\t%d\t%d\n",
			s.Client, addr, humanDuration(now.Sub(s.Since)), humanDuration(now.Sub(s.LastHeard)),
			humanBytes(s.BytesIn), s.PacketsIn, humanBytes(s.BytesOut), s.PacketsOut, s.Drops, s.Queued)
	}
	_ = tw.Flush()
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func humanDuration(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("%dh %dm %ds", h, m, s)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}
