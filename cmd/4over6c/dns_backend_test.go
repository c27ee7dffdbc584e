package main

// Backend choice and the command lines of the resolvectl and resolvconf
// backends, with fake tools in a temporary PATH that record how they were
// called.

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeTools is a directory that is the whole PATH, holding scripts named
// after the tools they stand in for. Each call appends "name args" and,
// for resolvconf -a, its stdin indented, to the log; a call whose
// arguments contain a string in fail exits 1.
type fakeTools struct {
	bin, log string
}

func newFakeTools(t *testing.T, fail map[string]string, tools ...string) fakeTools {
	t.Helper()
	sed, err := exec.LookPath("sed")
	if err != nil {
		t.Fatalf("sed is needed for the fake tools: %v", err)
	}
	dir := t.TempDir()
	f := fakeTools{bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "calls")}
	if err := os.Mkdir(f.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools {
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >> %s\n", tool, f.log)
		if tool == "resolvconf" {
			script += fmt.Sprintf("[ \"$1\" = -a ] && %s 's/^/  /' >> %s\n", sed, f.log)
		}
		if s, ok := fail[tool]; ok {
			script += fmt.Sprintf("case \"$*\" in *%q*) echo failing on purpose >&2; exit 1;; esac\n", s)
		}
		if err := os.WriteFile(filepath.Join(f.bin, tool), []byte(script+"exit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", f.bin)
	return f
}

func (f fakeTools) calls(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(f.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// fakeHost is a dnsEnv in a temporary directory: resolved's runtime
// directory, resolv.conf and nsswitch.conf as the case makes them.
type fakeHost struct {
	resolved    bool   // /run/systemd/resolve exists
	resolvLink  string // resolv.conf links to this file in it
	resolvConf  string // else the content of a plain resolv.conf
	nsswitch    string
	debianOrder string // /etc/resolvconf/interface-order, if any
}

func (h fakeHost) env(t *testing.T) dnsEnv {
	t.Helper()
	dir := t.TempDir()
	env := dnsEnv{
		resolvedDir: filepath.Join(dir, "run/systemd/resolve"), resolvConf: filepath.Join(dir, "etc/resolv.conf"),
		nsswitch: filepath.Join(dir, "etc/nsswitch.conf"), resolvconfDir: filepath.Join(dir, "etc/resolvconf"),
		stateDir: filepath.Join(dir, "run/4over6c"), run: commandRunner{timeout: 10 * time.Second},
	}
	for _, d := range []string{filepath.Dir(env.resolvConf), env.resolvconfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if h.resolved {
		if err := os.MkdirAll(env.resolvedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(env.resolvedDir, "stub-resolv.conf"), "nameserver 127.0.0.53\n", 0o644)
		writeFile(t, filepath.Join(env.resolvedDir, "resolv.conf"), "nameserver 192.0.2.1\n", 0o644)
	}
	if h.resolvLink != "" {
		if err := os.Symlink("../run/systemd/resolve/"+h.resolvLink, env.resolvConf); err != nil {
			t.Fatal(err)
		}
	} else {
		writeFile(t, env.resolvConf, h.resolvConf, 0o644)
	}
	writeFile(t, env.nsswitch, h.nsswitch, 0o644)
	if h.debianOrder != "" {
		writeFile(t, filepath.Join(env.resolvconfDir, "interface-order"), h.debianOrder, 0o644)
	}
	return env
}

func TestChooseDNSBackend(t *testing.T) {
	const plain = "nameserver 192.0.2.53\n"
	nss := "hosts: files dns\n"
	tests := []struct {
		name  string
		mode  string
		host  fakeHost
		tools []string
		fail  map[string]string
		want  string // Name() prefix; "file" is followed by the path
	}{
		{"resolved with its stub linked", dnsAuto, fakeHost{resolved: true, resolvLink: "stub-resolv.conf", nsswitch: nss},
			[]string{"resolvectl", "resolvconf"}, nil, "systemd-resolved link tun9"},
		{"resolved's upstream list linked", dnsAuto, fakeHost{resolved: true, resolvLink: "resolv.conf", nsswitch: nss},
			[]string{"resolvectl", "resolvconf"}, nil, "systemd-resolved link tun9"},
		{"resolved named as 127.0.0.53 in a plain file", dnsAuto,
			fakeHost{resolved: true, resolvConf: "nameserver 127.0.0.53\noptions edns0\n", nsswitch: nss},
			[]string{"resolvectl"}, nil, "systemd-resolved link tun9"},
		{"resolved asked by nsswitch", dnsAuto,
			fakeHost{resolved: true, resolvConf: plain, nsswitch: "passwd: files\nhosts: files resolve [!UNAVAIL=return] dns\n"},
			[]string{"resolvectl"}, nil, "systemd-resolved link tun9"},
		{"resolved not answering", dnsAuto, fakeHost{resolved: true, resolvLink: "stub-resolv.conf", nsswitch: nss},
			[]string{"resolvectl", "resolvconf"}, map[string]string{"resolvectl": "status"}, "resolvconf record tun9.4over6c"},
		{"resolved runs but lookups bypass it", dnsAuto, fakeHost{resolved: true, resolvConf: plain, nsswitch: nss},
			[]string{"resolvectl", "resolvconf"}, nil, "resolvconf record tun9.4over6c"},
		{"no resolved directory", dnsAuto, fakeHost{resolvConf: "nameserver 127.0.0.53\n", nsswitch: nss},
			[]string{"resolvectl", "resolvconf"}, nil, "resolvconf record tun9.4over6c"},
		{"resolved directory without resolvectl", dnsAuto, fakeHost{resolved: true, resolvLink: "stub-resolv.conf", nsswitch: nss},
			nil, nil, "file etc/resolv.conf"},
		{"nothing: the system file", dnsAuto, fakeHost{resolvConf: plain, nsswitch: nss}, nil, nil, "file etc/resolv.conf"},
		{"a path is always the file", "PATH", fakeHost{resolved: true, resolvLink: "stub-resolv.conf", nsswitch: nss},
			[]string{"resolvectl", "resolvconf"}, nil, "file other.conf"},
		{"resolved forced", dnsResolved, fakeHost{resolvConf: plain, nsswitch: nss}, nil, nil, "systemd-resolved link tun9"},
		{"resolvconf forced", dnsResolvconf, fakeHost{resolved: true, resolvLink: "stub-resolv.conf", nsswitch: nss},
			[]string{"resolvectl"}, nil, "resolvconf record tun9.4over6c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newFakeTools(t, tt.fail, tt.tools...)
			env := tt.host.env(t)
			mode := tt.mode
			if mode == "PATH" {
				mode = filepath.Join(t.TempDir(), "other.conf")
			}
			var logs bytes.Buffer
			b, err := chooseDNSBackend(mode, "tun9", env, testLogger(&logs))
			if err != nil {
				t.Fatalf("chooseDNSBackend: %v", err)
			}
			got := b.Name()
			if prefix, path, ok := strings.Cut(tt.want, " "); ok && prefix == "file" {
				if !strings.HasPrefix(got, "file ") || !strings.HasSuffix(got, "/"+path) {
					t.Errorf("backend %q, want the file backend on .../%s\n%s", got, path, logs.String())
				}
				return
			}
			if got != tt.want {
				t.Errorf("backend %q, want %q\n%s", got, tt.want, logs.String())
			}
		})
	}
}

func TestResolvedCommandLines(t *testing.T) {
	tests := []struct {
		name       string
		tun        string
		fail       string
		applyErr   bool
		restoreErr bool
		want       string
	}{
		{"all verbs", "4o6-none0", "", false, false,
			"resolvectl dns 4o6-none0 198.51.100.53 203.0.113.53\nresolvectl domain 4o6-none0 ~.\nresolvectl default-route 4o6-none0 yes\nresolvectl revert 4o6-none0\n"},
		{"old resolvectl without default-route", "4o6-none0", "default-route", false, false,
			"resolvectl dns 4o6-none0 198.51.100.53 203.0.113.53\nresolvectl domain 4o6-none0 ~.\nresolvectl default-route 4o6-none0 yes\nresolvectl revert 4o6-none0\n"},
		{"dns refused, still reverted", "4o6-none0", "dns 4o6", true, false,
			"resolvectl dns 4o6-none0 198.51.100.53 203.0.113.53\nresolvectl revert 4o6-none0\n"},
		{"revert of a link that is gone is no error", "4o6-none0", "revert", false, false,
			"resolvectl dns 4o6-none0 198.51.100.53 203.0.113.53\nresolvectl domain 4o6-none0 ~.\nresolvectl default-route 4o6-none0 yes\nresolvectl revert 4o6-none0\n"},
		{"revert failing on a live link is an error", "lo", "revert", false, true,
			"resolvectl dns lo 198.51.100.53 203.0.113.53\nresolvectl domain lo ~.\nresolvectl default-route lo yes\nresolvectl revert lo\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fail := map[string]string{}
			if tt.fail != "" {
				fail["resolvectl"] = tt.fail
			}
			tools := newFakeTools(t, fail, "resolvectl")
			r := newResolvedDNS(tt.tun, commandRunner{timeout: 10 * time.Second}, quietLog())
			if err := r.Apply([3]netip.Addr{dnsA, unset, dnsB}); (err != nil) != tt.applyErr {
				t.Errorf("Apply error %v, want error %v", err, tt.applyErr)
			}
			if err := r.Restore(); (err != nil) != tt.restoreErr {
				t.Errorf("Restore error %v, want error %v", err, tt.restoreErr)
			}
			if got := tools.calls(t); got != tt.want {
				t.Errorf("calls:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func testLogger(w *bytes.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func TestResolvconfRecord(t *testing.T) {
	debian := "lo.inet6\nlo.inet\nlo.@(dnsmasq|pdnsd)\nlo.!(pdns|pdns-recursor)\nlo\ntun*\ntap*\nhso*\n@(br|eth)*([^.]).inet6\n*\n"
	tests := []struct {
		tun, order, want string
	}{
		{"4over6c", "", "4over6c.4over6c"},
		{"4over6c", debian, "tun.4over6c.4over6c"},
		{"tun7", debian, "tun7.4over6c"},
		{"4over6c", "# mine\nlo*\neth*\n*\n", "eth.4over6c.4over6c"},
		{"4over6c", "*\n", "4over6c.4over6c"},
	}
	for _, tt := range tests {
		if got := resolvconfRecord(tt.tun, []byte(tt.order)); got != tt.want {
			t.Errorf("resolvconfRecord(%q, %q) = %q, want %q", tt.tun, tt.order, got, tt.want)
		}
	}
}

func TestResolvconfCommandLinesAndState(t *testing.T) {
	tools := newFakeTools(t, nil, "resolvconf")
	env := fakeHost{resolvConf: "nameserver 192.0.2.53\n"}.env(t)
	r, err := newResolvconfDNS("4over6c", env, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply([3]netip.Addr{dnsA, dnsB, unset}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	add := "resolvconf -a 4over6c.4over6c -m 0 -x\n  nameserver 198.51.100.53\n  nameserver 203.0.113.53\n"
	if got := tools.calls(t); got != add {
		t.Errorf("calls after Apply:\n%s\nwant:\n%s", got, add)
	}
	st, _, ok, err := stateDir{env.stateDir}.load(resolvconfKey("4over6c.4over6c"))
	if err != nil || !ok || st.Record != "4over6c.4over6c" || st.PID != os.Getpid() {
		t.Fatalf("state while applied = %+v, %v, %v; want the record and this PID", st, ok, err)
	}
	if err := r.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got, want := tools.calls(t), add+"resolvconf -d 4over6c.4over6c -f\n"; got != want {
		t.Errorf("calls after Restore:\n%s\nwant:\n%s", got, want)
	}
	if _, _, ok, _ := (stateDir{env.stateDir}).load(resolvconfKey("4over6c.4over6c")); ok {
		t.Error("state left after Restore")
	}
}

// The record of a killed client is deleted by the next start and by
// -restore-dns; both read its name from the state directory.
func TestResolvconfRecordOfKilledClient(t *testing.T) {
	for _, how := range []string{"next start", "-restore-dns"} {
		t.Run(how, func(t *testing.T) {
			tools := newFakeTools(t, nil, "resolvconf")
			env := fakeHost{resolvConf: "nameserver 192.0.2.53\n", debianOrder: "lo\ntun*\n"}.env(t)
			killed, err := newResolvconfDNS("4over6c", env, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			if err := killed.Apply([3]netip.Addr{dnsA}); err != nil {
				t.Fatal(err)
			}
			if how == "next start" {
				_, err = newResolvconfDNS("4over6c", env, quietLog())
			} else {
				_, err = restoreAllDNS(env, quietLog())
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tools.calls(t); !strings.HasSuffix(got, "resolvconf -d tun.4over6c.4over6c -f\n") {
				t.Errorf("calls:\n%s\nwant the record deleted", got)
			}
			if files, _ := os.ReadDir(env.stateDir); len(files) != 0 {
				t.Errorf("state left: %v", files)
			}
		})
	}
}

func TestRestoreDNSCommand(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	var stderr bytes.Buffer
	if code := run([]string{"-restore-dns", "-dns-state", state}, &stderr); code != 0 || !strings.Contains(stderr.String(), "nothing to restore") {
		t.Fatalf("-restore-dns with no state: exit %d, %q; want 0 and a clear message", code, stderr.String())
	}

	path := filepath.Join(dir, "resolv.conf")
	const original = "search lan.example\nnameserver 192.0.2.53\n"
	writeFile(t, path, original, 0o644)
	f, err := newFileDNS(path, state, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	apply(t, f, dnsA)
	stderr.Reset()
	if code := run([]string{"-restore-dns", "-dns-state", state}, &stderr); code != 0 {
		t.Fatalf("-restore-dns: exit %d: %s", code, stderr.String())
	}
	if got := readFile(t, path); got != original {
		t.Errorf("after -restore-dns: %q, want %q", got, original)
	}
	if !strings.Contains(stderr.String(), "DNS file restored") {
		t.Errorf("-restore-dns said %q, want what it restored", stderr.String())
	}

	writeFile(t, filepath.Join(state, "junk.json"), "{", 0o600)
	stderr.Reset()
	if code := run([]string{"-restore-dns", "-dns-state", state}, &stderr); code != 1 || !strings.Contains(stderr.String(), "corrupt") {
		t.Errorf("-restore-dns on a corrupt state: exit %d, %q; want 1 naming it", code, stderr.String())
	}
}
