package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
)

// resolvHeader opens the file we write, so that an operator who finds it
// knows who wrote it and that it is temporary.
const resolvHeader = "# written by 4over6c from the tunnel server's DNS servers; restored when 4over6c exits\n"

// resolvFile applies the server's DNS servers to a resolv.conf-style file
// (-dns-apply) and puts the original back on exit. Every change is a write
// to a temporary file renamed over the target, so a resolver never reads a
// half-written file.
type resolvFile struct {
	path string
	// saved is set once the original state below has been captured,
	// before the first write.
	saved    bool
	existed  bool
	symlink  string // target if the original was a symlink
	original []byte
	mode     fs.FileMode
	written  []byte // what we wrote last, to skip rewriting the same
}

func newResolvFile(path string) *resolvFile {
	return &resolvFile{path: path}
}

// Apply writes one nameserver line per distinct server, skipping 0.0.0.0
// (the protocol's placeholder for an unset field). With no server left the
// file is not touched, since an empty resolver list helps nobody.
func (r *resolvFile) Apply(servers [3]netip.Addr) error {
	content, n := resolvContent(servers)
	if n == 0 || bytes.Equal(content, r.written) {
		return nil
	}
	if !r.saved {
		if err := r.save(); err != nil {
			return err
		}
	}
	if err := writeAtomic(r.path, content, r.mode); err != nil {
		return err
	}
	r.written = content
	return nil
}

// resolvContent returns the file content and how many servers it names.
func resolvContent(servers [3]netip.Addr) ([]byte, int) {
	content := []byte(resolvHeader)
	seen := make(map[netip.Addr]bool, len(servers))
	for _, s := range servers {
		if !s.IsValid() || s.IsUnspecified() || seen[s] {
			continue
		}
		seen[s] = true
		content = fmt.Appendf(content, "nameserver %s\n", s)
	}
	return content, len(seen)
}

// save records the file as it was: its content and mode, whether it was a
// symlink (common for /etc/resolv.conf) or did not exist at all.
func (r *resolvFile) save() error {
	r.mode = 0o644
	info, err := os.Lstat(r.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.saved = true
		return nil
	case err != nil:
		return fmt.Errorf("failed to inspect DNS file %s: %w", r.path, err)
	case info.Mode()&fs.ModeSymlink != 0:
		if r.symlink, err = os.Readlink(r.path); err != nil {
			return fmt.Errorf("failed to read symlink %s: %w", r.path, err)
		}
	default:
		if r.original, err = os.ReadFile(r.path); err != nil {
			return fmt.Errorf("failed to read DNS file %s: %w", r.path, err)
		}
		r.mode = info.Mode().Perm()
	}
	r.existed, r.saved = true, true
	return nil
}

// Restore puts back what Apply replaced; without a prior Apply it does
// nothing.
func (r *resolvFile) Restore() error {
	if !r.saved || r.written == nil {
		return nil
	}
	var err error
	switch {
	case !r.existed:
		err = os.Remove(r.path)
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	case r.symlink != "":
		err = symlinkAtomic(r.symlink, r.path)
	default:
		err = writeAtomic(r.path, r.original, r.mode)
	}
	if err != nil {
		return fmt.Errorf("failed to restore DNS file %s: %w", r.path, err)
	}
	r.written = nil
	return nil
}

// writeAtomic replaces path with content through a temporary file in the
// same directory. A path that cannot be renamed over because it is a mount
// point (Docker bind-mounts /etc/resolv.conf) is rewritten in place
// instead: not atomic, but the only way to change it.
func writeAtomic(path string, content []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".4over6c-dns-*")
	if err != nil {
		return fmt.Errorf("failed to create temporary file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(content)
	err = errors.Join(err, tmp.Chmod(mode), tmp.Close())
	if err != nil {
		return fmt.Errorf("failed to write temporary file for %s: %w", path, err)
	}
	err = os.Rename(tmp.Name(), path)
	if errors.Is(err, syscall.EBUSY) {
		err = os.WriteFile(path, content, mode)
	}
	if err != nil {
		return fmt.Errorf("failed to replace %s: %w", path, err)
	}
	return nil
}

// symlinkAtomic makes path a symlink to target through a temporary link.
func symlinkAtomic(target, path string) error {
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".4over6c-link-%d", os.Getpid()))
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("failed to create symlink to %s: %w", target, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("failed to replace %s with a symlink: %w", path, err)
	}
	return nil
}
