package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// fileDNS rewrites a resolv.conf-style file (-dns-apply PATH, or the auto
// mode's last resort): the nameserver lines become the server's, the rest
// of the file stays. Before the first write the original goes to the state
// directory, so that whoever finds the tunnel's servers left behind (the
// next start, -restore-dns) can put it back. Every write is a temporary
// file renamed over the target, so a resolver never reads half a file.
//
// Someone else may write the file while the tunnel runs (NetworkManager,
// a DHCP client). The state records what 4over6c wrote; a file with any
// other content is theirs: a later Apply takes it as the new original and
// puts the tunnel's servers into it, and a restore leaves it alone.
type fileDNS struct {
	path  string // absolute
	state stateDir
	log   *slog.Logger
	// orig is the file as it was before 4over6c wrote it; nil until the
	// first Apply and after Restore.
	orig    *fileSnapshot
	written []string // digests of what was written, see dnsState
	servers [3]netip.Addr
}

// fileSnapshot is a file as found on disk.
type fileSnapshot struct {
	existed bool
	symlink string
	owner   fileOwner
	// content is what a reader gets: through the symlink when there is
	// one, empty when the file or the link's target is missing.
	content []byte
}

// fileOwner is the mode and ownership a written file gets; -1 keeps the
// writer's.
type fileOwner struct {
	mode     fs.FileMode
	uid, gid int
}

// newFileDNS undoes what a 4over6c killed earlier left in path, unless
// that 4over6c still runs: then it manages the file, and this one must
// not.
func newFileDNS(path, dir string, log *slog.Logger) (*fileDNS, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("-dns-apply %q: %w", path, err)
	}
	f := &fileDNS{path: abs, state: stateDir{dir}, log: log}
	st, orig, ok, err := f.state.load(abs)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return f, nil
	case ownerRunning(st.PID):
		return nil, fmt.Errorf("%s is managed by 4over6c pid %d: %w", abs, st.PID, errOwnerRunning)
	}
	log.Warn("the last 4over6c did not exit cleanly: undoing its DNS change", slog.String("path", abs), slog.Int("pid", st.PID))
	if err := restoreFile(f.state, st, orig, log); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileDNS) Name() string { return "file " + f.path }

// Apply writes the servers into the file, based on the original.
func (f *fileDNS) Apply(servers [3]netip.Addr) error {
	if len(usableServers(servers)) == 0 {
		return nil
	}
	cur, err := readSnapshot(f.path)
	if err != nil {
		return err
	}
	adopt := f.orig == nil
	if !adopt && !cur.writtenBy(f.written) {
		f.log.Warn("DNS file changed by another program since 4over6c wrote it: writing the tunnel's servers into the new content, which is what exit restores",
			slog.String("path", f.path))
		adopt, f.written = true, nil
	}
	if adopt {
		f.orig = &cur
	} else if servers == f.servers {
		return nil
	}
	content, _ := resolvContent(f.orig.content, servers)
	// The digest of the content on disk stays listed: a crash between
	// the state and the file leaves that content there.
	if n := len(f.written); n > 1 {
		f.written = f.written[n-1:]
	}
	f.written = append(f.written, digest(content))
	var orig []byte // nil: the saved original stays
	if adopt {
		orig = append([]byte{}, f.orig.content...)
	}
	if err := f.state.save(f.path, f.stateRecord(), orig); err != nil {
		return err
	}
	if err := writeAtomic(f.path, content, f.orig.writeOwner()); err != nil {
		return err
	}
	f.servers = servers
	return nil
}

func (f *fileDNS) stateRecord() dnsState {
	return dnsState{
		Kind: stateFile, PID: os.Getpid(), Path: f.path, Existed: f.orig.existed, Symlink: f.orig.symlink,
		Mode: f.orig.owner.mode, UID: f.orig.owner.uid, GID: f.orig.owner.gid, Written: f.written,
	}
}

// Restore puts the original back, unless someone else wrote the file.
func (f *fileDNS) Restore() error {
	if f.orig == nil {
		return nil
	}
	if err := restoreFile(f.state, f.stateRecord(), f.orig.content, f.log); err != nil {
		return err
	}
	f.orig, f.written, f.servers = nil, nil, [3]netip.Addr{}
	return nil
}

// restoreFile undoes st: the original goes back if the file still holds
// what 4over6c wrote; a file someone else wrote since is left as it is.
// Either way the state is removed.
func restoreFile(dir stateDir, st dnsState, orig []byte, log *slog.Logger) error {
	cur, err := readSnapshot(st.Path)
	if err != nil {
		return err
	}
	switch {
	case cur.writtenBy(st.Written):
		if err := putBack(st, orig); err != nil {
			return err
		}
		log.Info("DNS file restored", slog.String("path", st.Path))
	case cur.sameAs(st, orig):
		log.Info("DNS file already as before 4over6c", slog.String("path", st.Path))
	default:
		log.Warn("DNS file changed by another program after 4over6c wrote it: leaving it as it is",
			slog.String("path", st.Path), slog.Int("bytes", len(cur.content)))
	}
	return dir.remove(st.Path)
}

func putBack(st dnsState, orig []byte) error {
	var err error
	switch {
	case !st.Existed:
		err = os.Remove(st.Path)
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	case st.Symlink != "":
		err = symlinkAtomic(st.Symlink, st.Path)
	default:
		err = writeAtomic(st.Path, orig, fileOwner{mode: st.Mode, uid: st.UID, gid: st.GID})
	}
	if err != nil {
		return fmt.Errorf("failed to restore DNS file %s: %w", st.Path, err)
	}
	return nil
}

func readSnapshot(path string) (fileSnapshot, error) {
	s := fileSnapshot{owner: fileOwner{mode: 0o644, uid: -1, gid: -1}}
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("failed to inspect DNS file %s: %w", path, err)
	}
	s.existed = true
	if info.Mode()&fs.ModeSymlink != 0 {
		if s.symlink, err = os.Readlink(path); err != nil {
			return s, fmt.Errorf("failed to read symlink %s: %w", path, err)
		}
	} else {
		s.owner.mode = info.Mode().Perm()
		if sys, ok := info.Sys().(*syscall.Stat_t); ok {
			s.owner.uid, s.owner.gid = int(sys.Uid), int(sys.Gid)
		}
	}
	s.content, err = os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		// A dangling symlink reads as empty.
		err = nil
	}
	if err != nil {
		return s, fmt.Errorf("failed to read DNS file %s: %w", path, err)
	}
	return s, nil
}

// writtenBy reports whether the file is one of the contents 4over6c wrote.
func (s fileSnapshot) writtenBy(digests []string) bool {
	return s.existed && s.symlink == "" && slices.Contains(digests, digest(s.content))
}

// sameAs reports whether the file is still (or again) the original.
func (s fileSnapshot) sameAs(st dnsState, orig []byte) bool {
	switch {
	case !st.Existed:
		return !s.existed
	case st.Symlink != "":
		return s.symlink == st.Symlink
	}
	return s.existed && s.symlink == "" && bytes.Equal(s.content, orig)
}

// writeOwner is what a file written over this one gets: its mode and
// owner, or 0644 and the writer's when it was missing or a symlink.
func (s fileSnapshot) writeOwner() fileOwner {
	if !s.existed || s.symlink != "" {
		return fileOwner{mode: 0o644, uid: -1, gid: -1}
	}
	return s.owner
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// writeAtomic replaces path with content through a temporary file in the
// same directory. A path that cannot be renamed over because it is a mount
// point (Docker bind-mounts /etc/resolv.conf) is rewritten in place
// instead: not atomic, but the only way to change it.
func writeAtomic(path string, content []byte, owner fileOwner) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".4over6c-dns-*")
	if err != nil {
		return fmt.Errorf("failed to create temporary file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(content)
	err = errors.Join(err, tmp.Chmod(owner.mode))
	if owner.uid >= 0 || owner.gid >= 0 {
		err = errors.Join(err, tmp.Chown(owner.uid, owner.gid))
	}
	if err = errors.Join(err, tmp.Close()); err != nil {
		return fmt.Errorf("failed to write temporary file for %s: %w", path, err)
	}
	err = os.Rename(tmp.Name(), path)
	if errors.Is(err, syscall.EBUSY) {
		err = os.WriteFile(path, content, owner.mode)
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
