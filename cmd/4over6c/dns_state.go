package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Kinds of DNS state kept on disk.
const (
	stateFile       = "file"
	stateResolvconf = "resolvconf"
)

// dnsState is what a backend wrote to disk before changing the host, so
// that a later 4over6c can undo the change when this one was killed. It is
// the JSON file <key>.json in the state directory; a rewritten file's
// original bytes are beside it in <key>.orig, as they were, so that an
// operator can also copy them back by hand.
type dnsState struct {
	Kind string `json:"kind"`
	// PID is the 4over6c that made the change: while it runs, nobody
	// else restores.
	PID int `json:"pid"`

	// Path is the rewritten file (kind file).
	Path string `json:"path,omitempty"`
	// Existed is false when the file did not exist before: restoring
	// removes it.
	Existed bool `json:"existed"`
	// Symlink is the link target when the original was a symlink.
	Symlink string      `json:"symlink,omitempty"`
	Mode    fs.FileMode `json:"mode,omitempty"`
	UID     int         `json:"uid"`
	GID     int         `json:"gid"`
	// Written are the SHA-256 digests of the contents 4over6c wrote (or
	// was about to write): a file with another content was written by
	// someone else and is left alone.
	Written []string `json:"written_sha256,omitempty"`

	// Record is the resolvconf record added (kind resolvconf).
	Record string `json:"record,omitempty"`
}

// stateDir is the directory of dnsState files (-dns-state). A key is the
// absolute path of a rewritten file or "resolvconf:" and a record name,
// escaped into one file name.
type stateDir struct {
	dir string
}

const (
	stateSuffix = ".json"
	origSuffix  = ".orig"
)

func (d stateDir) base(key string) string { return filepath.Join(d.dir, url.PathEscape(key)) }

// save writes orig (when not nil and st is a regular file's) and then st,
// each through a temporary file: the JSON is the commit point, so a crash
// in between leaves the state before the save. An original left from an
// earlier save that st no longer needs goes after it.
func (d stateDir) save(key string, st dnsState, orig []byte) error {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return fmt.Errorf("failed to create DNS state directory: %w", err)
	}
	if orig != nil && st.hasOrig() {
		if err := writeAtomic(d.base(key)+origSuffix, orig, fileOwner{mode: 0o600, uid: -1, gid: -1}); err != nil {
			return fmt.Errorf("failed to save the original of %s: %w", key, err)
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode DNS state: %w", err)
	}
	if err := writeAtomic(d.base(key)+stateSuffix, append(b, '\n'), fileOwner{mode: 0o600, uid: -1, gid: -1}); err != nil {
		return fmt.Errorf("failed to save DNS state for %s: %w", key, err)
	}
	if !st.hasOrig() {
		if err := os.Remove(d.base(key) + origSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to remove a stale original of %s: %w", key, err)
		}
	}
	return nil
}

// hasOrig reports whether the state has the original's bytes beside it:
// only a regular file's are needed to restore.
func (st dnsState) hasOrig() bool { return st.Kind == stateFile && st.Existed && st.Symlink == "" }

// load reads the state under key; ok is false when there is none. The
// original bytes are read only for a file that existed as a regular file.
func (d stateDir) load(key string) (st dnsState, orig []byte, ok bool, err error) {
	b, err := os.ReadFile(d.base(key) + stateSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil, false, nil
	}
	if err != nil {
		return st, nil, false, fmt.Errorf("failed to read DNS state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, nil, false, fmt.Errorf("DNS state %s is corrupt: %w", d.base(key)+stateSuffix, err)
	}
	if st.hasOrig() {
		if orig, err = os.ReadFile(d.base(key) + origSuffix); err != nil {
			return st, nil, false, fmt.Errorf("the saved original of %s is missing: %w", st.Path, err)
		}
	}
	return st, orig, true, nil
}

// remove deletes the state under key and its original.
func (d stateDir) remove(key string) error {
	var errs []error
	for _, suffix := range []string{stateSuffix, origSuffix} {
		if err := os.Remove(d.base(key) + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("failed to remove DNS state: %w", err)
	}
	return nil
}

// keys lists the keys that have state; a missing directory has none.
func (d stateDir) keys() ([]string, error) {
	entries, err := os.ReadDir(d.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list DNS state: %w", err)
	}
	var keys []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), stateSuffix)
		if !ok || e.IsDir() {
			continue
		}
		if key, err := url.PathUnescape(name); err == nil {
			keys = append(keys, key)
		}
	}
	return keys, nil
}

// ownerRunning reports whether the 4over6c that wrote a state still runs:
// a live process with that PID and the same command name as this one
// (a PID reused by another program after a crash does not count). This
// process is not an owner to wait for.
func ownerRunning(pid int) bool {
	if pid <= 0 || pid == os.Getpid() {
		return false
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return false
	}
	self, err := os.ReadFile("/proc/self/comm")
	return err == nil && string(comm) == string(self)
}

// errOwnerRunning is why state is left alone: its 4over6c still runs and
// restores by itself on exit.
var errOwnerRunning = errors.New("its 4over6c still runs (stop it with SIGTERM and it restores by itself)")
