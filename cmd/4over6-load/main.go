// Command 4over6-load is a load generator for 4over6d: it opens many
// sessions (100 -> 101), holds them with heartbeats, optionally sends UDP
// packets through each tunnel as 102 frames, and reports the setup rate,
// setup latency percentiles and failures. A sink mode counts (and can echo)
// those packets on the IPv4 side. Every run is bounded in count and time
// and stops by itself; see scripts/bench/scale.sh and docs/performance.md.
//
// Exit codes: 0 when every requested session was set up and none was lost
// (sink: when the sink ran), 1 otherwise, 2 for invalid flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "4over6-load:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var progress io.Writer = stderr
	if o.quiet {
		progress = io.Discard
	}
	if o.sink.IsValid() {
		r, err := runSink(ctx, o)
		if err != nil {
			fmt.Fprintln(stderr, "4over6-load:", err)
			return 1
		}
		if err := r.write(stdout, o.json); err != nil {
			return 1
		}
		return 0
	}
	r := newLoad(o, progress).run(ctx)
	if err := r.write(stdout, o.json); err != nil {
		return 1
	}
	if r.Established != int64(o.n) || r.Lost > 0 {
		return 1
	}
	return 0
}
