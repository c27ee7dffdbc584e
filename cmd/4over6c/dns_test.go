package main

import (
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

var (
	dnsA    = netip.MustParseAddr("198.51.100.53")
	dnsB    = netip.MustParseAddr("203.0.113.53")
	unset   = netip.IPv4Unspecified()
	resolvA = resolvHeader + "nameserver 198.51.100.53\nnameserver 203.0.113.53\n"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

func TestResolvContentDedupesAndSkipsUnset(t *testing.T) {
	tests := []struct {
		servers [3]netip.Addr
		want    string
		n       int
	}{
		{[3]netip.Addr{dnsA, dnsB, dnsA}, resolvA, 2},
		{[3]netip.Addr{unset, dnsA, dnsB}, resolvA, 2},
		{[3]netip.Addr{dnsB, dnsB, dnsB}, resolvHeader + "nameserver 203.0.113.53\n", 1},
		{[3]netip.Addr{unset, unset, {}}, resolvHeader, 0},
	}
	for _, tt := range tests {
		got, n := resolvContent(tt.servers)
		if string(got) != tt.want || n != tt.n {
			t.Errorf("resolvContent(%v) = %q, %d; want %q, %d", tt.servers, got, n, tt.want, tt.n)
		}
	}
}

func TestResolvFileRestoresExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	const original = "nameserver 192.0.2.53\nsearch example.org\n"
	if err := os.WriteFile(path, []byte(original), 0o640); err != nil {
		t.Fatal(err)
	}
	r := newResolvFile(path)
	if err := r.Apply([3]netip.Addr{dnsA, dnsB, dnsB}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := readFile(t, path); got != resolvA {
		t.Fatalf("applied file = %q, want %q", got, resolvA)
	}
	if err := r.Apply([3]netip.Addr{dnsB, dnsB, dnsB}); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if err := r.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := readFile(t, path); got != original {
		t.Fatalf("restored file = %q, want the original %q", got, original)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("restored mode = %v, %v; want 0640", info.Mode(), err)
	}
	assertNoTempFiles(t, filepath.Dir(path))
}

func TestResolvFileRemovesFileItCreated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	r := newResolvFile(path)
	if err := r.Apply([3]netip.Addr{dnsA, dnsB, dnsA}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := readFile(t, path); got != resolvA {
		t.Fatalf("applied file = %q", got)
	}
	if err := r.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("file the client created still exists after Restore: %v", err)
	}
}

func TestResolvFileRestoresSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "stub-resolv.conf")
	if err := os.WriteFile(target, []byte("nameserver 127.0.0.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	r := newResolvFile(path)
	if err := r.Apply([3]netip.Addr{dnsA, dnsB, dnsB}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := readFile(t, target); got != "nameserver 127.0.0.53\n" {
		t.Errorf("Apply wrote through the symlink into its target: %q", got)
	}
	if err := r.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got, err := os.Readlink(path); err != nil || got != target {
		t.Fatalf("restored path is %q, %v; want a symlink to %s", got, err, target)
	}
	assertNoTempFiles(t, dir)
}

func TestResolvFileUntouchedWithoutServers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	r := newResolvFile(path)
	if err := r.Apply([3]netip.Addr{unset, unset, unset}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := r.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("file written without any server: %v", err)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	matches, err := fs.Glob(os.DirFS(dir), ".4over6c-*")
	if err != nil || len(matches) != 0 {
		t.Errorf("temporary files left in %s: %v, %v", dir, matches, err)
	}
}
