//go:build linux

package fleettest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
)

// Ports every member uses on its own address (the defaults of etcd).
const (
	clientPort = 2379
	peerPort   = 2380
)

// Raft timing, given explicitly so that the tests' timings (a new leader
// within about two election timeouts of losing one) do not hang on
// etcd's defaults, which are the same today. Shorter election timeouts
// bring false elections on a loaded two-core machine.
const (
	heartbeatMillis = 100
	electionMillis  = 1000
)

// stopTimeout bounds the wait for a member to exit after SIGTERM before
// it is killed (and the test failed: etcd stops in well under a second).
const stopTimeout = 10 * time.Second

// member is one etcd server of a Cluster: its place on the fabric, its
// data directory (kept across restarts) and its running process, if any.
type member struct {
	name    string
	addr    netip.Addr
	ns      *netnstest.NS
	dataDir string
	logPath string
	proc    *process // nil while stopped
	pids    []int    // every process ever started for it, for the cleanup checks
}

func (m *member) clientURL() string {
	return fmt.Sprintf("http://%s", netip.AddrPortFrom(m.addr, clientPort))
}

func (m *member) peerURL() string {
	return fmt.Sprintf("http://%s", netip.AddrPortFrom(m.addr, peerPort))
}

// args are etcd 3.4's flags for the member. With a data directory from an
// earlier run, etcd ignores the initial-cluster flags and rejoins with
// the identity stored there.
func (m *member) args(initialCluster, state, token string) []string {
	return []string{
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", m.clientURL(),
		"--advertise-client-urls", m.clientURL(),
		"--listen-peer-urls", m.peerURL(),
		"--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", initialCluster,
		"--initial-cluster-state", state,
		"--initial-cluster-token", token,
		"--heartbeat-interval", fmt.Sprint(heartbeatMillis),
		"--election-timeout", fmt.Sprint(electionMillis),
		// 3.4's default logger (capnslog) warns that it is deprecated.
		"--logger", "zap",
		"--log-outputs", "stderr",
	}
}

// process is one run of a member's etcd, started by the Cluster (by PID:
// `ip netns exec` execs etcd in place, so the PID is etcd's own).
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // its exit status; read only after done
}

// running reports whether the process has not exited yet.
func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits up to timeout for the process to exit.
func (p *process) wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// startProcess starts etcd in the member's namespace with its output
// appended to the member's log, and a goroutine that reaps it (it exits
// with the process, which the cluster's cleanup always ends).
func startProcess(s *spawner, m *member, etcd string, args []string) (*process, error) {
	log, err := os.OpenFile(m.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open the log of %s: %w", m.name, err)
	}
	defer log.Close() // the child has its own copy
	fmt.Fprintf(log, "=== fleettest: %s start %d at %s: %s %s\n", m.name, len(m.pids)+1,
		time.Now().Format(time.RFC3339Nano), etcd, strings.Join(args, " "))
	cmd := m.ns.Command(context.Background(), etcd, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = etcdEnv()
	// A test binary that dies (a panic, go test's timeout) runs no
	// cleanup: the kernel then kills the members instead of leaving them
	// running in nameless namespaces.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.start(cmd); err != nil {
		return nil, fmt.Errorf("failed to start etcd %s in %s: %w", m.name, m.ns.Name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	m.pids = append(m.pids, cmd.Process.Pid)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// etcdEnv is the test's environment without ETCD_* variables, which etcd
// reads as flags and which would change what the cluster is.
func etcdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") && !strings.HasPrefix(kv, "ETCDCTL_") {
			env = append(env, kv)
		}
	}
	return env
}

// stop sends sig to the process and waits for it to exit; after SIGTERM
// it falls back to SIGKILL past stopTimeout and reports that as an error.
func (p *process) stop(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("failed to send %v to PID %d: %w", sig, p.cmd.Process.Pid, err)
	}
	if p.wait(stopTimeout) {
		return nil
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("PID %d did not exit within %v of %v and was killed", p.cmd.Process.Pid, stopTimeout, sig)
}

// spawner starts processes from one OS thread that lives as long as its
// Cluster. Pdeathsig fires when the thread that forked a child exits, not
// the process: the Go runtime retires a thread whenever a goroutine ends
// while locked to it, which would kill a member forked there in the
// middle of a test. This thread is locked by its own goroutine and ends
// only at close, after the members have been stopped.
type spawner struct {
	requests chan spawnRequest
	done     chan struct{}
}

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan error
}

func newSpawner() *spawner {
	s := &spawner{requests: make(chan spawnRequest), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	defer close(s.done)
	for r := range s.requests {
		r.result <- r.cmd.Start()
	}
}

// start runs cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	r := spawnRequest{cmd: cmd, result: make(chan error, 1)}
	s.requests <- r
	return <-r.result
}

// close ends the thread; any child still alive then gets its Pdeathsig.
func (s *spawner) close() {
	close(s.requests)
	<-s.done
}

// tail returns the last n lines of the file at path, for failure reports.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
