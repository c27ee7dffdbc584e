package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// restoreDNSCommand is 4over6c -restore-dns: it undoes every DNS change
// recorded in the state directory whose 4over6c no longer runs, and exits
// 0 when all were undone or there was nothing to undo, 1 otherwise.
func restoreDNSCommand(o *options, stderr io.Writer) int {
	log := o.log.New(stderr)
	env := hostDNSEnv(o.dnsState)
	n, err := restoreAllDNS(env, log)
	if err != nil {
		log.Error("failed to restore DNS", slog.Any("err", err))
		return 1
	}
	if n == 0 {
		fmt.Fprintf(stderr, "4over6c: nothing to restore: no DNS state in %s (a 4over6c that exits cleanly leaves none)\n", env.stateDir)
	}
	return 0
}

// restoreAllDNS undoes the recorded changes and returns how many it found.
func restoreAllDNS(env dnsEnv, log *slog.Logger) (int, error) {
	dir := stateDir{env.stateDir}
	keys, err := dir.keys()
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, key := range keys {
		if err := restoreOne(dir, env, key, log); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	return len(keys), errors.Join(errs...)
}

func restoreOne(dir stateDir, env dnsEnv, key string, log *slog.Logger) error {
	st, orig, ok, err := dir.load(key)
	switch {
	case err != nil:
		return err
	case !ok:
		return nil // removed meanwhile
	case ownerRunning(st.PID):
		return fmt.Errorf("pid %d: %w", st.PID, errOwnerRunning)
	}
	switch st.Kind {
	case stateFile:
		if st.Path != key {
			return fmt.Errorf("DNS state names %s but is kept as %s", st.Path, key)
		}
		return restoreFile(dir, st, orig, log)
	case stateResolvconf:
		if err := deleteResolvconfRecord(dir, env.run, st.Record); err != nil {
			return err
		}
		log.Info("resolvconf record deleted", slog.String("record", st.Record))
		return nil
	}
	return fmt.Errorf("unknown kind %q of DNS state", st.Kind)
}
