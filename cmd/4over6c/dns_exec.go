package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// commandRunner runs the resolver tools (resolvectl, resolvconf) found in
// PATH. A tool that hangs (a D-Bus call to a stuck daemon) is killed after
// the timeout, so that the client never stalls on DNS.
type commandRunner struct {
	timeout time.Duration
}

// execCommand is the runner the client uses.
var execCommand = commandRunner{timeout: 10 * time.Second}

// lookPath reports whether name is an executable in PATH.
func (r commandRunner) lookPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// run runs name with args and stdin, and returns an error with the
// command line and what the command printed when it fails.
func (r commandRunner) run(stdin []byte, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
