package main

// The console's command line: `4over6d kick`, `reserve` and `unreserve`
// call the management API of a running server, as `4over6d status` reads
// /status. Exit codes: 0 done (one line says what happened), 1 the server
// refused or could not be reached (its error message), 2 bad usage.

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"time"

	"github.com/4over6d/4over6d/actors"
)

// apiClient talks to one admin endpoint.
type apiClient struct {
	base  string // http://ADDR
	token []byte // sent as a Bearer token when set
	http  *http.Client
}

// clientFlags are the flags every console command has.
type clientFlags struct {
	admin, tokenFile string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.admin, "admin", defaultAdmin, "admin endpoint of the running server")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the admin endpoint's token (the server's -admin-token-file)")
}

// client reads the token file, if any.
func (c *clientFlags) client() (*apiClient, error) {
	cl := &apiClient{base: "http://" + c.admin, http: &http.Client{Timeout: 10 * time.Second}}
	if c.tokenFile != "" {
		token, err := readTokenFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("-token-file: %w", err)
		}
		cl.token = token
	}
	return cl, nil
}

// do sends one request and decodes a 2xx answer into out (if not nil). A
// refusal comes back as the server's error message.
func (c *apiClient) do(method, path string, body, out any) error {
	data, err := c.send(method, path, body)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("bad answer from %s: %w", c.base, err)
	}
	return nil
}

// send sends one request with body as JSON (if not nil) and returns the
// body of a 2xx answer.
func (c *apiClient) send(method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("bad admin address: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != nil {
		req.Header.Set("Authorization", "Bearer "+string(c.token))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to reach the server's admin endpoint: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("failed to read the answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s (%s)", errorMessage(data), resp.Status)
	}
	return data, nil
}

// maxAnswer bounds what a console command reads: /status of a full /16
// pool is a few tens of MiB.
const maxAnswer = 256 << 20

// parseInterspersed parses flags anywhere among the arguments (`kick ADDR
// -ban 1h` as well as `kick -ban 1h ADDR`) and returns the others.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// command is what the console commands share: flags, parsing, exit codes.
type command struct {
	name, usage    string
	stdout, stderr io.Writer
	fs             *flag.FlagSet
	cf             clientFlags
}

func newCommand(name, usage string, stdout, stderr io.Writer) *command {
	c := &command{name: "4over6d " + name, usage: usage, stdout: stdout, stderr: stderr,
		fs: flag.NewFlagSet("4over6d "+name, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s %s\n", c.name, usage)
		c.fs.PrintDefaults()
	}
	c.cf.register(c.fs)
	return c
}

// parse parses args wanting n positional arguments; ok false means exit
// with code.
func (c *command) parse(args []string, n int) (pos []string, code int, ok bool) {
	pos, err := parseInterspersed(c.fs, args)
	if err == flag.ErrHelp {
		return nil, 0, false
	}
	if err != nil {
		return nil, 2, false
	}
	if len(pos) != n {
		return nil, c.usageError("want %s, got %d", plural(n, "argument"), len(pos)), false
	}
	return pos, 0, true
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func (c *command) usageError(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "%s: %s\nusage: %s %s\n", c.name, fmt.Sprintf(format, args...), c.name, c.usage)
	return 2
}

// call runs one request and prints its outcome.
func (c *command) call(method, path string, body, out any, done func() string) int {
	cl, err := c.cf.client()
	if err != nil {
		return c.usageError("%v", err)
	}
	if err := cl.do(method, path, body, out); err != nil {
		fmt.Fprintf(c.stderr, "%s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintln(c.stdout, done())
	return 0
}

// runKick is `4over6d kick [-ban D] ADDR`.
func runKick(args []string, stdout, stderr io.Writer) int {
	c := newCommand("kick", "[-admin ADDR] [-token-file F] [-ban DURATION] IPV4-ADDR", stdout, stderr)
	ban := c.fs.Duration("ban", 0, "also refuse new connections from the client's source for this long (1s-720h)")
	pos, code, ok := c.parse(args, 1)
	if !ok {
		return code
	}
	addr, err := netip.ParseAddr(pos[0])
	if err != nil || !addr.Is4() {
		return c.usageError("%q is not an IPv4 address", pos[0])
	}
	path := "/api/v1/sessions/" + addr.String()
	if *ban != 0 {
		path += "?ban=" + ban.String()
	}
	var res apiKick
	return c.call(http.MethodDelete, path, nil, &res, func() string {
		line := fmt.Sprintf("kicked %s (client %s)", res.Kicked, res.Client)
		if res.BannedUntil != "" {
			line += ", banned until " + res.BannedUntil
		}
		return line
	})
}

// runReserve is `4over6d reserve [-rate R] CLIENT-IPV6 ADDR`.
func runReserve(args []string, stdout, stderr io.Writer) int {
	c := newCommand("reserve", "[-admin ADDR] [-token-file F] [-rate RATE] CLIENT-IPV6 IPV4-ADDR", stdout, stderr)
	rate := c.fs.String("rate", "", "rate limit for this client, e.g. 20mbit (default: the server's -rate-limit)")
	pos, code, ok := c.parse(args, 2)
	if !ok {
		return code
	}
	client, err := netip.ParseAddr(pos[0])
	if err != nil || !client.Is6() || client.Is4In6() {
		return c.usageError("%q is not a client IPv6 address", pos[0])
	}
	addr, err := netip.ParseAddr(pos[1])
	if err != nil || !addr.Is4() {
		return c.usageError("%q is not an IPv4 address", pos[1])
	}
	if *rate != "" {
		if _, err := actors.ParseRate(*rate); err != nil {
			return c.usageError("-rate %q: %v", *rate, err)
		}
	}
	var res apiReservation
	return c.call(http.MethodPut, "/api/v1/reservations/"+client.String(), reserveBody{Addr: addr.String(), Rate: *rate}, &res, func() string {
		line := fmt.Sprintf("reserved %s for %s", res.Addr, res.Client)
		if res.Rate != "" {
			line += " at " + res.Rate
		}
		return line
	})
}

// runUnreserve is `4over6d unreserve CLIENT-IPV6`.
func runUnreserve(args []string, stdout, stderr io.Writer) int {
	c := newCommand("unreserve", "[-admin ADDR] [-token-file F] CLIENT-IPV6", stdout, stderr)
	pos, code, ok := c.parse(args, 1)
	if !ok {
		return code
	}
	client, err := netip.ParseAddr(pos[0])
	if err != nil || !client.Is6() || client.Is4In6() {
		return c.usageError("%q is not a client IPv6 address", pos[0])
	}
	return c.call(http.MethodDelete, "/api/v1/reservations/"+client.String(), nil, nil, func() string {
		return "removed the reservation of " + client.String()
	})
}
