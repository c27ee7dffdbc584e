package main

// The real client binary with -dns-apply against the real server, killed
// with SIGKILL in the middle: what it left is undone by -restore-dns or by
// the next start; a file someone else wrote while it ran is not
// overwritten; with systemd-resolved the servers go on the TUN link.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// tunnelDNS is the line the test server's -dns makes the client write.
const tunnelDNS = "nameserver 198.51.100.53\n"

// dnsOriginal is how the DNS file looks before the client starts.
type dnsOriginal struct {
	name string
	// make creates it at path (in a directory of its own).
	make func(t *testing.T, path string)
	// check fails the test unless path is exactly as make left it.
	check func(t *testing.T, path string)
	// kept are lines that must survive in the file while the tunnel's
	// servers are in it.
	kept []string
	// saved is the original the state directory must hold ("": none,
	// a link or a missing file needs no bytes).
	saved string
}

const dhcpResolv = "# from DHCP\nsearch lan.example\nnameserver 203.0.113.1\noptions ndots:2 edns0\n"

func dnsOriginals() []dnsOriginal {
	return []dnsOriginal{
		{
			name: "regular file with search and options",
			make: func(t *testing.T, path string) { writeFile(t, path, dhcpResolv, 0o640) },
			check: func(t *testing.T, path string) {
				t.Helper()
				info, err := os.Lstat(path)
				if err != nil || !info.Mode().IsRegular() || info.Mode().Perm() != 0o640 {
					t.Fatalf("%s is %v, %v; want a regular file with mode 0640", path, info, err)
				}
				if got := readFile(t, path); got != dhcpResolv {
					t.Fatalf("%s = %q, want the original byte for byte %q", path, got, dhcpResolv)
				}
			},
			kept:  []string{"search lan.example\n", "options ndots:2 edns0\n"},
			saved: dhcpResolv,
		},
		{
			name: "symlink to a stub file",
			make: func(t *testing.T, path string) {
				writeFile(t, path+".stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\n", 0o644)
				if err := os.Symlink(filepath.Base(path)+".stub", path); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, path string) {
				t.Helper()
				if got, err := os.Readlink(path); err != nil || got != filepath.Base(path)+".stub" {
					t.Fatalf("%s links to %q, %v; want the original relative link", path, got, err)
				}
				if got := readFile(t, path+".stub"); got != "nameserver 127.0.0.53\noptions edns0 trust-ad\n" {
					t.Fatalf("the link's target was changed: %q", got)
				}
			},
			kept: []string{"options edns0 trust-ad\n"},
		},
		{
			name: "no file",
			make: func(*testing.T, string) {},
			check: func(t *testing.T, path string) {
				t.Helper()
				if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("%s exists (%v); the client created it and must remove it", path, err)
				}
			},
		},
	}
}

// dnsRun is one client's DNS file and state directory.
type dnsRun struct {
	path, state string
}

func newDNSRun(t *testing.T) dnsRun {
	dir := t.TempDir()
	return dnsRun{path: filepath.Join(dir, "resolv.conf"), state: filepath.Join(dir, "state")}
}

// start runs the client with -dns-apply on the file and waits until the
// file names the tunnel's DNS server.
func (r dnsRun) start(t *testing.T, tp *topology, extra ...string) *process {
	t.Helper()
	c := tp.runClient(t, 0, append([]string{"-dns-apply", r.path, "-dns-state", r.state}, extra...)...)
	waitUntil(t, e2eStart, func() bool {
		b, err := os.ReadFile(r.path)
		return err == nil && strings.Contains(string(b), tunnelDNS)
	}, "the DNS file to name the tunnel's DNS server")
	return c
}

// kill sends SIGKILL and waits until the process and its TUN are gone.
func (r dnsRun) kill(t *testing.T, tp *topology, c *process) {
	t.Helper()
	if _, err := c.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("client killed with SIGKILL exited with status 0")
	}
	waitUntil(t, e2eStart, func() bool { return !tunExists(tp.clients[0]) }, "the killed client's TUN to disappear")
}

// stateFiles lists the state directory.
func (r dnsRun) stateFiles(t *testing.T) []string {
	t.Helper()
	return fileRig{state: r.state}.stateFiles(t)
}

// restoreDNS runs the built client's -restore-dns on the host, as an
// operator would after a crash, and returns its exit code and output.
func (r dnsRun) restoreDNS(t *testing.T) (int, string) {
	t.Helper()
	_, bin := binaries(t)
	cmd := exec.Command(bin, "-restore-dns", "-dns-state", r.state)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	case err != nil:
		t.Fatalf("4over6c -restore-dns: %v", err)
	}
	return 0, string(out)
}

// checkApplied checks the file while the tunnel's servers are in it.
func (r dnsRun) checkApplied(t *testing.T, orig dnsOriginal) {
	t.Helper()
	got := readFile(t, r.path)
	for _, line := range orig.kept {
		if !strings.Contains(got, line) {
			t.Errorf("DNS file while connected = %q, want its %q kept", got, line)
		}
	}
	if strings.Count(got, "nameserver ") != 1 {
		t.Errorf("DNS file while connected = %q, want the tunnel's server as the only nameserver", got)
	}
}

func TestE2EKilledClientDNSUndoneByRestoreDNS(t *testing.T) {
	tp := newTopology(t, 1)
	tp.runServer(t)
	for _, orig := range dnsOriginals() {
		t.Run(orig.name, func(t *testing.T) {
			r := newDNSRun(t)
			orig.make(t, r.path)
			c := r.start(t, tp)
			r.checkApplied(t, orig)

			code, out := r.restoreDNS(t)
			if code != 1 || !strings.Contains(out, "still runs") {
				t.Errorf("-restore-dns while the client runs: exit %d, %q; want 1, saying it still runs", code, out)
			}
			if got := readFile(t, r.path); !strings.Contains(got, tunnelDNS) {
				t.Fatalf("-restore-dns changed the file of a running client: %q", got)
			}

			r.kill(t, tp, c)
			if got := readFile(t, r.path); !strings.Contains(got, tunnelDNS) {
				t.Fatalf("DNS file after SIGKILL = %q; the test needs the tunnel's servers left behind", got)
			}
			files := r.stateFiles(t)
			if len(files) == 0 {
				t.Fatal("nothing saved on disk before the client was killed")
			}
			if orig.saved != "" {
				if got := readFile(t, stateDir{r.state}.base(r.path)+origSuffix); got != orig.saved {
					t.Errorf("saved original = %q, want %q", got, orig.saved)
				}
			}

			if code, out := r.restoreDNS(t); code != 0 || !strings.Contains(out, "DNS file restored") {
				t.Fatalf("-restore-dns after the kill: exit %d, %q; want 0, saying what it restored", code, out)
			}
			orig.check(t, r.path)
			if files := r.stateFiles(t); len(files) != 0 {
				t.Errorf("state left after -restore-dns: %v", files)
			}
			if code, out := r.restoreDNS(t); code != 0 || !strings.Contains(out, "nothing to restore") {
				t.Errorf("second -restore-dns: exit %d, %q; want 0 and nothing to restore", code, out)
			}
		})
	}
}

func TestE2EKilledClientDNSUndoneByNextStart(t *testing.T) {
	tp := newTopology(t, 1)
	tp.runServer(t)
	for _, orig := range dnsOriginals() {
		t.Run(orig.name, func(t *testing.T) {
			r := newDNSRun(t)
			orig.make(t, r.path)
			r.kill(t, tp, r.start(t, tp))
			if len(r.stateFiles(t)) == 0 {
				t.Fatal("nothing saved on disk before the client was killed")
			}

			next := r.start(t, tp)
			next.awaitLog(t, "did not exit cleanly")
			next.awaitLog(t, "msg=connected")
			r.checkApplied(t, orig)
			if got := readFile(t, r.path); strings.Count(got, resolvHeader) != 1 {
				t.Errorf("DNS file after the next start = %q, want one header: it must build on the original, not on what the killed client left", got)
			}
			if _, err := next.stop(t, syscall.SIGTERM); err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
			orig.check(t, r.path)
			if files := r.stateFiles(t); len(files) != 0 {
				t.Errorf("state left after a clean exit: %v", files)
			}
		})
	}
}

// replaceFile writes content the way NetworkManager does: a new file
// renamed over the old one, so the client never reads half of it.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".nm-tmp"
	writeFile(t, tmp, content, 0o644)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestE2EDNSFileChangedWhileClientRuns(t *testing.T) {
	tp := newTopology(t, 1)
	tp.runServer(t)
	r := newDNSRun(t)
	writeFile(t, r.path, dhcpResolv, 0o644)
	c := r.start(t, tp)

	// NetworkManager writes the file (a DHCP renewal); a reconnect then
	// puts the tunnel's servers into its new content.
	const nm = "# Generated by NetworkManager\nsearch wifi.example\nnameserver 192.0.2.1\n"
	replaceFile(t, r.path, nm)
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	want := resolvHeader + "# Generated by NetworkManager\nsearch wifi.example\n" + tunnelDNS
	waitUntil(t, e2eStart, func() bool { b, _ := os.ReadFile(r.path); return string(b) == want },
		"the reconnected client to write its servers into NetworkManager's file")
	c.awaitLog(t, "changed by another program since 4over6c wrote it")

	// It writes again; on exit the client leaves that alone.
	const nm2 = "# Generated by NetworkManager\nnameserver 192.0.2.2\n"
	replaceFile(t, r.path, nm2)
	if _, err := c.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if got := readFile(t, r.path); got != nm2 {
		t.Errorf("DNS file after exit = %q, want NetworkManager's %q left as it is", got, nm2)
	}
	c.awaitLog(t, "leaving it as it is")
	if files := r.stateFiles(t); len(files) != 0 {
		t.Errorf("state left after exit: %v", files)
	}
}

// With -dns-apply resolved the servers go on the TUN link while it exists,
// and are reverted before it goes. resolvectl is a fake that records its
// arguments and whether the link was there, inside the client's namespace.
func TestE2EDNSOnResolvedLink(t *testing.T) {
	tp := newTopology(t, 1)
	tp.runServer(t)
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := fmt.Sprintf("#!/bin/sh\nlink=absent\n[ -e \"/sys/class/net/$2\" ] && link=present\necho \"$* ($link)\" >> %s\n", calls)
	if err := os.WriteFile(filepath.Join(dir, "resolvectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	c := tp.runClient(t, 0, "-dns-apply", "resolved")
	connectedAddr(t, c, tp.clients[0])
	want := "dns 4over6c 198.51.100.53 (present)\ndomain 4over6c ~. (present)\ndefault-route 4over6c yes (present)\n"
	waitUntil(t, e2eStart, func() bool { b, _ := os.ReadFile(calls); return string(b) == want }, "resolvectl to be called for the TUN")
	if _, err := c.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if got := readFile(t, calls); got != want+"revert 4over6c (present)\n" {
		t.Errorf("resolvectl calls:\n%s\nwant the link reverted while it still exists:\n%srevert 4over6c (present)", got, want)
	}
}
