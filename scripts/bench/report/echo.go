package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"time"
)

// runEcho measures the floor under any user-space tunnel's idle RTT: UDP
// round trips between this process and a child echo process over
// loopback, paced like the ping test. Each round trip wakes two sleeping
// processes, and nothing else happens, so its p50 is what the machine
// charges for two wake-ups; a tunnel needs at least three (client TUN
// read, server socket read, client socket read). It prints one
// results.jsonl line.
func runEcho(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	n := fs.Int("n", 200, "round trips")
	interval := fs.Duration("interval", 10*time.Millisecond, "pause between round trips, like ping -i")
	name := fs.String("case", "floor", "case name for the result line")
	serve := fs.Bool("serve", false, "run as the echo child (internal)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *serve {
		return echoServe(stdout)
	}
	p50, p99, replies, err := echoMeasure(*n, *interval)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(result{Case: *name, Metric: "ping_server", P50: p50, P99: p99, Replies: replies, Sent: *n})
}

// echoServe answers every datagram until stdin closes (the parent exits).
func echoServe(stdout io.Writer) error {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, pc.LocalAddr())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); _ = pc.Close() }()
	buf := make([]byte, 64)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return nil
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

func echoMeasure(n int, interval time.Duration) (p50, p99 float64, replies int, err error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, 0, err
	}
	child := exec.Command(self, "echo", "-serve")
	stdin, err := child.StdinPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	out, err := child.StdoutPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := child.Start(); err != nil {
		return 0, 0, 0, err
	}
	defer func() { _ = stdin.Close(); _ = child.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return 0, 0, 0, fmt.Errorf("echo child: %w", err)
	}
	conn, err := net.Dial("udp4", line[:len(line)-1])
	if err != nil {
		return 0, 0, 0, err
	}
	defer conn.Close()
	var rtts []float64
	buf := make([]byte, 64)
	for i := range n {
		time.Sleep(interval)
		start := time.Now()
		if _, err := fmt.Fprintf(conn, "%d", i); err != nil {
			return 0, 0, 0, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(buf); err != nil {
			continue
		}
		rtts = append(rtts, float64(time.Since(start).Microseconds()))
	}
	if len(rtts) == 0 {
		return 0, 0, 0, errors.New("no echo came back")
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], rtts[len(rtts)*99/100], len(rtts), nil
}
