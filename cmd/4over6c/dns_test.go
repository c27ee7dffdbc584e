package main

import (
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var (
	dnsA  = netip.MustParseAddr("198.51.100.53")
	dnsB  = netip.MustParseAddr("203.0.113.53")
	unset = netip.IPv4Unspecified()
	nsAB  = "nameserver 198.51.100.53\nnameserver 203.0.113.53\n"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile keeps the mode of a file that exists.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestResolvContent(t *testing.T) {
	ab := [3]netip.Addr{dnsA, dnsB, dnsA}
	tests := []struct {
		name    string
		base    string
		servers [3]netip.Addr
		want    string
		n       int
	}{
		{"search and options kept, nameservers replaced in place",
			"# from DHCP\nsearch lan.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0 trust-ad\n", ab,
			resolvHeader + "# from DHCP\nsearch lan.example\n" + nsAB + "options edns0 trust-ad\n", 2},
		{"domain and sortlist kept, servers after them when the file had none",
			"domain corp.example\nsortlist 198.51.100.0/255.255.255.0\n", ab,
			resolvHeader + "domain corp.example\nsortlist 198.51.100.0/255.255.255.0\n" + nsAB, 2},
		{"empty file", "", ab, resolvHeader + nsAB, 2},
		{"last line without newline", "nameserver 192.0.2.53\nsearch a.example", ab, resolvHeader + nsAB + "search a.example\n", 2},
		{"indented and commented nameservers", "  nameserver 192.0.2.53\n#nameserver 192.0.2.9\n", ab,
			resolvHeader + nsAB + "#nameserver 192.0.2.9\n", 2},
		{"0.0.0.0 and unset skipped", "search a.example\n", [3]netip.Addr{unset, dnsA, {}},
			resolvHeader + "search a.example\nnameserver 198.51.100.53\n", 1},
		{"duplicates once", "", [3]netip.Addr{dnsB, dnsB, dnsB}, resolvHeader + "nameserver 203.0.113.53\n", 1},
		{"no usable server", "nameserver 192.0.2.53\n", [3]netip.Addr{unset, unset, {}}, resolvHeader, 0},
		{"our own header not repeated", resolvHeader + "search a.example\nnameserver 192.0.2.53\n", ab,
			resolvHeader + "search a.example\n" + nsAB, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n := resolvContent([]byte(tt.base), tt.servers)
			if string(got) != tt.want || n != tt.n {
				t.Errorf("resolvContent(%q, %v) =\n%q, %d; want\n%q, %d", tt.base, tt.servers, got, n, tt.want, tt.n)
			}
		})
	}
}

// fileRig is a resolv.conf and a state directory in a temporary directory.
type fileRig struct {
	dir, path, state string
}

func newFileRig(t *testing.T) fileRig {
	dir := t.TempDir()
	return fileRig{dir: dir, path: filepath.Join(dir, "resolv.conf"), state: filepath.Join(dir, "state")}
}

func (r fileRig) backend(t *testing.T) *fileDNS {
	t.Helper()
	f, err := newFileDNS(r.path, r.state, quietLog())
	if err != nil {
		t.Fatalf("newFileDNS: %v", err)
	}
	return f
}

// stateFiles lists the state directory.
func (r fileRig) stateFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(r.state)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func apply(t *testing.T, f *fileDNS, servers ...netip.Addr) {
	t.Helper()
	var s [3]netip.Addr
	copy(s[:], servers)
	if err := f.Apply(s); err != nil {
		t.Fatalf("Apply(%v): %v", servers, err)
	}
}

func restore(t *testing.T, f *fileDNS) {
	t.Helper()
	if err := f.Restore(); err != nil {
		t.Fatalf("Restore: %v", err)
	}
}

func TestFileDNSSavesOriginalOnDiskAndRestores(t *testing.T) {
	r := newFileRig(t)
	const original = "search lan.example\nnameserver 192.0.2.53\noptions ndots:2\n"
	writeFile(t, r.path, original, 0o640)
	f := r.backend(t)
	apply(t, f, dnsA, dnsB, dnsB)
	if got, want := readFile(t, r.path), resolvHeader+"search lan.example\n"+nsAB+"options ndots:2\n"; got != want {
		t.Fatalf("applied file = %q, want %q", got, want)
	}
	base := stateDir{r.state}.base(r.path)
	if !strings.HasPrefix(filepath.Base(base), "%2F") {
		t.Errorf("state name %s is not the escaped path", base)
	}
	if got := readFile(t, base+".orig"); got != original {
		t.Errorf("saved original = %q, want %q", got, original)
	}
	if got := readFile(t, base+".json"); !strings.Contains(got, `"kind": "file"`) {
		t.Errorf("state = %s", got)
	}
	apply(t, f, dnsB)
	if got := readFile(t, r.path); got != resolvHeader+"search lan.example\nnameserver 203.0.113.53\noptions ndots:2\n" {
		t.Errorf("file after new servers = %q", got)
	}
	restore(t, f)
	if got := readFile(t, r.path); got != original {
		t.Fatalf("restored file = %q, want the original %q", got, original)
	}
	if info, err := os.Stat(r.path); err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("restored mode = %v, %v; want 0640", info.Mode(), err)
	}
	if files := r.stateFiles(t); len(files) != 0 {
		t.Errorf("state left after a clean restore: %v", files)
	}
	assertNoTempFiles(t, r.dir)
}

func TestFileDNSRemovesFileItCreated(t *testing.T) {
	r := newFileRig(t)
	f := r.backend(t)
	apply(t, f, dnsA, dnsB, dnsA)
	if got := readFile(t, r.path); got != resolvHeader+nsAB {
		t.Fatalf("applied file = %q", got)
	}
	restore(t, f)
	if _, err := os.Stat(r.path); !os.IsNotExist(err) {
		t.Fatalf("file the client created still exists after Restore: %v", err)
	}
}

func TestFileDNSRestoresSymlink(t *testing.T) {
	r := newFileRig(t)
	target := filepath.Join(r.dir, "stub-resolv.conf")
	writeFile(t, target, "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch home.example\n", 0o644)
	if err := os.Symlink(target, r.path); err != nil {
		t.Fatal(err)
	}
	f := r.backend(t)
	apply(t, f, dnsA, dnsB)
	if got := readFile(t, target); got != "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch home.example\n" {
		t.Errorf("Apply wrote through the symlink into its target: %q", got)
	}
	if got, want := readFile(t, r.path), resolvHeader+nsAB+"options edns0 trust-ad\nsearch home.example\n"; got != want {
		t.Errorf("applied file = %q, want the target's options and search with the tunnel's servers %q", got, want)
	}
	restore(t, f)
	if got, err := os.Readlink(r.path); err != nil || got != target {
		t.Fatalf("restored path is %q, %v; want a symlink to %s", got, err, target)
	}
	assertNoTempFiles(t, r.dir)
}

func TestFileDNSUntouchedWithoutServers(t *testing.T) {
	r := newFileRig(t)
	f := r.backend(t)
	apply(t, f, unset, unset, unset)
	restore(t, f)
	if _, err := os.Stat(r.path); !os.IsNotExist(err) {
		t.Fatalf("file written without any server: %v", err)
	}
	if files := r.stateFiles(t); len(files) != 0 {
		t.Errorf("state written without any server: %v", files)
	}
}

// A backend made while state is on disk undoes what the last run left: the
// next start after a crash.
func TestFileDNSNextStartUndoesCrash(t *testing.T) {
	const original = "search lan.example\nnameserver 192.0.2.53\n"
	tests := []struct {
		name string
		// after the "crash", before the next start
		meanwhile func(t *testing.T, r fileRig)
		want      string
	}{
		{"file as the crashed client left it", func(*testing.T, fileRig) {}, original},
		{"killed between saving the state and writing new servers", func(t *testing.T, r fileRig) {
			// The previous content, still the client's: the second
			// Apply had saved its state but not written the file.
			writeFile(t, r.path, resolvHeader+"search lan.example\n"+nsAB, 0o644)
		}, original},
		{"file rewritten by someone else", func(t *testing.T, r fileRig) {
			writeFile(t, r.path, "nameserver 192.0.2.99\n", 0o644)
		}, "nameserver 192.0.2.99\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFileRig(t)
			writeFile(t, r.path, original, 0o644)
			crashed := r.backend(t)
			apply(t, crashed, dnsA, dnsB)
			apply(t, crashed, dnsB)
			tt.meanwhile(t, r)
			r.backend(t)
			if got := readFile(t, r.path); got != tt.want {
				t.Errorf("file after the next start = %q, want %q", got, tt.want)
			}
			if files := r.stateFiles(t); len(files) != 0 {
				t.Errorf("state left after the next start: %v", files)
			}
		})
	}
}

// Someone else (NetworkManager) writing the file while the tunnel runs
// wins: a restore leaves their file, a later Apply writes into it.
func TestFileDNSChangedByOthers(t *testing.T) {
	r := newFileRig(t)
	writeFile(t, r.path, "nameserver 192.0.2.53\n", 0o644)
	f := r.backend(t)
	apply(t, f, dnsA)
	const nm = "# Generated by NetworkManager\nsearch wifi.example\nnameserver 192.0.2.1\n"
	writeFile(t, r.path, nm, 0o644)
	apply(t, f, dnsA)
	if got, want := readFile(t, r.path), resolvHeader+"# Generated by NetworkManager\nsearch wifi.example\nnameserver 198.51.100.53\n"; got != want {
		t.Errorf("Apply after an outside change = %q, want the new content with the tunnel's servers %q", got, want)
	}
	restore(t, f)
	if got := readFile(t, r.path); got != nm {
		t.Errorf("restored = %q, want NetworkManager's content %q", got, nm)
	}

	apply(t, f, dnsA)
	const nm2 = "nameserver 192.0.2.2\n"
	writeFile(t, r.path, nm2, 0o644)
	restore(t, f)
	if got := readFile(t, r.path); got != nm2 {
		t.Errorf("restore over an outside change wrote %q, want the file left as %q", got, nm2)
	}
	if files := r.stateFiles(t); len(files) != 0 {
		t.Errorf("state left: %v", files)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	matches, err := fs.Glob(os.DirFS(dir), ".4over6c-*")
	if err != nil || len(matches) != 0 {
		t.Errorf("temporary files left in %s: %v, %v", dir, matches, err)
	}
}
