package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// runHops cuts idle pings through the tunnel into their hops, from the
// `perf script -F comm,pid,tid,cpu,time,event,trace` output of scheduler
// and syscall tracepoints on every CPU (scripts/bench/profile.sh's ping
// phase), and prints the median of each hop in µs. Each hop ends at an
// event that only it produces: a process woken by the netpoller (an
// epoll_pwait returning events), the start and end of a write(2) or
// writev(2), and ping's recvmsg returning its reply. That is what says
// which hop of an idle ping is slow: a sleep, our code, or the kernel.
func runHops(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("hops", flag.ContinueOnError)
	server := fs.String("server", "", "PID of 4over6d")
	client := fs.String("client", "", "PID of 4over6c")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *server == "" || *client == "" {
		return errors.New("hops: -server and -client PIDs are required")
	}
	evs, err := readTrace(stdin, *server, *client)
	if err != nil {
		return err
	}
	hops := cutPings(evs)
	if len(hops) == 0 {
		return errors.New("hops: no complete ping in the trace")
	}
	fmt.Fprintf(stdout, "%d pings; median µs per hop (tracing adds to each)\n", len(hops))
	for i, name := range hopNames {
		col := make([]float64, len(hops))
		for j, h := range hops {
			col[j] = h[i]
		}
		fmt.Fprintf(stdout, "%-58s %6.0f\n", name, median(col))
	}
	total := make([]float64, len(hops))
	for j, h := range hops {
		for _, d := range h {
			total[j] += d
		}
	}
	fmt.Fprintf(stdout, "%-58s %6.0f\n", "total (ping's send to its reply)", median(total))
	return nil
}

// hopNames are the hops of one ping, in order; each ends where the next
// begins.
var hopNames = []string{
	"4over6c woken (TUN readable)",
	"4over6c TUN read -> socket write",
	"4over6c socket write (kernel: TCP to the server)",
	"4over6d woken (socket readable)",
	"4over6d socket read -> TUN write (session, TUN actor)",
	"4over6d TUN write (kernel: the echo reply)",
	"4over6d TUN read -> socket write (Router, session)",
	"4over6d socket write (kernel: TCP to the client)",
	"4over6c woken (socket readable)",
	"4over6c socket read -> TUN write",
	"4over6c TUN write (kernel: to ping)",
	"ping woken",
}

// traceEvent is one tracepoint hit of ping, 4over6d or 4over6c.
type traceEvent struct {
	us   float64 // timestamp
	who  byte    // 'p'ing, 'd' (server), 'c' (client)
	text string  // the event and its fields
}

var traceLine = regexp.MustCompile(`^\s*(\S+)\s+(\d+)/\d+\s+\[\d+\]\s+([\d.]+):\s+(.*)$`)

func readTrace(r io.Reader, server, client string) ([]traceEvent, error) {
	var evs []traceEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := traceLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var who byte
		switch {
		case m[2] == server:
			who = 'd'
		case m[2] == client:
			who = 'c'
		case m[1] == "ping":
			who = 'p'
		default:
			continue
		}
		t, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("hops: bad timestamp %q: %w", m[3], err)
		}
		evs = append(evs, traceEvent{us: t * 1e6, who: who, text: m[4]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("hops: failed to read the trace: %w", err)
	}
	return evs, nil
}

// x86-64 syscall numbers in raw_syscalls events.
const (
	nrWrite      = "1"
	nrWritev     = "20"
	nrSendto     = "44"
	nrRecvmsg    = "47"
	nrEpollPwait = "281"
)

func isEnter(e traceEvent, who byte, nrs ...string) bool {
	return e.who == who && slices.ContainsFunc(nrs, func(nr string) bool {
		return strings.HasPrefix(e.text, "raw_syscalls:sys_enter: NR "+nr+" ")
	})
}

// exitOK matches a syscall's return with a positive result (events
// returned, bytes moved).
func exitOK(e traceEvent, who byte, nrs ...string) bool {
	return e.who == who && slices.ContainsFunc(nrs, func(nr string) bool {
		rest, ok := strings.CutPrefix(e.text, "raw_syscalls:sys_exit: NR "+nr+" = ")
		return ok && rest != "" && rest[0] >= '1' && rest[0] <= '9'
	})
}

func isExit(e traceEvent, who byte, nrs ...string) bool {
	return e.who == who && slices.ContainsFunc(nrs, func(nr string) bool {
		return strings.HasPrefix(e.text, "raw_syscalls:sys_exit: NR "+nr+" ")
	})
}

// cutPings returns, per complete ping, the duration of each hop of
// hopNames in µs. A ping runs from one sendto of ping to the next; one
// whose events do not all appear in order (a lost or retried packet) is
// skipped.
func cutPings(evs []traceEvent) [][]float64 {
	steps := []func(traceEvent) bool{
		func(e traceEvent) bool { return exitOK(e, 'c', nrEpollPwait) },
		func(e traceEvent) bool { return isEnter(e, 'c', nrWrite, nrWritev) },
		func(e traceEvent) bool { return isExit(e, 'c', nrWrite, nrWritev) },
		func(e traceEvent) bool { return exitOK(e, 'd', nrEpollPwait) },
		func(e traceEvent) bool { return isEnter(e, 'd', nrWrite, nrWritev) },
		func(e traceEvent) bool { return isExit(e, 'd', nrWrite, nrWritev) },
		func(e traceEvent) bool { return isEnter(e, 'd', nrWrite, nrWritev) },
		func(e traceEvent) bool { return isExit(e, 'd', nrWrite, nrWritev) },
		func(e traceEvent) bool { return exitOK(e, 'c', nrEpollPwait) },
		func(e traceEvent) bool { return isEnter(e, 'c', nrWrite, nrWritev) },
		func(e traceEvent) bool { return isExit(e, 'c', nrWrite, nrWritev) },
		func(e traceEvent) bool { return exitOK(e, 'p', nrRecvmsg) },
	}
	var starts []int
	for i, e := range evs {
		if isEnter(e, 'p', nrSendto) {
			starts = append(starts, i)
		}
	}
	starts = append(starts, len(evs))
	var out [][]float64
	for k := 0; k+1 < len(starts); k++ {
		seq := evs[starts[k]:starts[k+1]]
		last, pos := seq[0].us, 1
		hops := make([]float64, 0, len(steps))
		for _, step := range steps {
			for pos < len(seq) && !step(seq[pos]) {
				pos++
			}
			if pos == len(seq) {
				break
			}
			hops = append(hops, seq[pos].us-last)
			last = seq[pos].us
			pos++
		}
		if len(hops) == len(steps) {
			out = append(out, hops)
		}
	}
	return out
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
