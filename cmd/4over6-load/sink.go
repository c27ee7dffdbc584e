package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"
)

// sinkReport is what sink mode prints: the UDP packets that arrived (the
// uplink of the sessions) and how many were echoed back (their downlink).
type sinkReport struct {
	Packets  uint64  `json:"packets"`
	Bytes    uint64  `json:"bytes"` // UDP payload bytes
	Echoed   uint64  `json:"echoed"`
	Sources  int     `json:"sources"` // distinct source address:port pairs
	Seconds  float64 `json:"seconds"` // first to last packet
	PPS      float64 `json:"pps"`
	MbitIPv4 float64 `json:"mbit_ipv4"` // IPv4 packet bytes (payload + 28) per second, in Mbit/s
}

// runSink counts (and with -echo returns) UDP packets on o.sink for
// o.duration, then reports.
func runSink(ctx context.Context, o *options) (*sinkReport, error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(o.sink))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetReadBuffer(8 << 20)
	_ = conn.SetWriteBuffer(8 << 20)
	end := time.Now().Add(o.duration)
	if err := conn.SetReadDeadline(end); err != nil {
		return nil, err
	}
	go func() {
		<-ctx.Done()
		_ = conn.SetReadDeadline(time.Now())
	}()
	var (
		r           sinkReport
		first, last time.Time
		buf         = make([]byte, 65536)
		sources     = make(map[netip.AddrPort]struct{})
	)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return nil, err
		}
		last = time.Now()
		if r.Packets == 0 {
			first = last
		}
		r.Packets++
		r.Bytes += uint64(n)
		if len(sources) < 100_000 {
			sources[from] = struct{}{}
		}
		if o.echo {
			if _, err := conn.WriteToUDPAddrPort(buf[:n], from); err == nil {
				r.Echoed++
			}
		}
	}
	r.Sources = len(sources)
	r.Seconds = last.Sub(first).Seconds()
	if r.Seconds > 0 {
		r.PPS = float64(r.Packets) / r.Seconds
		r.MbitIPv4 = float64(r.Bytes+28*r.Packets) * 8 / r.Seconds / 1e6
	}
	return &r, nil
}

func (r *sinkReport) write(w io.Writer, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	_, err := fmt.Fprintf(w, "sink: %d packets (%d payload bytes) from %d sources in %.2f s: %.0f packets/s, %.1f Mbit/s of IPv4; %d echoed\n",
		r.Packets, r.Bytes, r.Sources, r.Seconds, r.PPS, r.MbitIPv4, r.Echoed)
	return err
}
