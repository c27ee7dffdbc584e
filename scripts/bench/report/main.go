// Command report turns the raw results of scripts/bench/run.sh and
// scripts/bench/scale.sh into the generated sections of
// docs/performance.md (and, for run.sh, a PNG bar chart drawn with
// gnuplot). It only rewrites the text between its own markers, so the rest
// of the document (other sections, the hand-written analysis) is kept.
//
//	go run ./scripts/bench/report bench -dir WORKDIR [-cases LIST] [-check] [-md FILE] [-png FILE]
//	go run ./scripts/bench/report scale -json FILE [-md FILE]
//	report echo [-n 200] [-interval 10ms] [-case floor]   (a built binary: it runs itself as the echo child)
//	perf script ... | go run ./scripts/bench/report hops -server PID -client PID   (profile.sh's ping phase)
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: report bench|scale|echo|hops [flags]")
	}
	switch args[0] {
	case "bench":
		return runBench(args[1:], stdout)
	case "scale":
		return runScale(args[1:], stdout)
	case "echo":
		return runEcho(args[1:], stdout)
	case "hops":
		return runHops(args[1:], os.Stdin, stdout)
	}
	return fmt.Errorf("unknown mode %q (bench, scale, echo or hops)", args[0])
}

// machine is machine.json, written by lib.sh's machine_json and completed by
// the scripts.
type machine struct {
	Date        string `json:"date"`
	Commit      string `json:"commit"`
	Dirty       bool   `json:"dirty"`
	CPU         string `json:"cpu"`
	NProc       int    `json:"nproc"`
	Kernel      string `json:"kernel"`
	Go          string `json:"go"`
	LoadBefore  string `json:"load_before"`
	LoadAfter   string `json:"load_after"`
	Seconds     int    `json:"seconds"`
	Pings       int    `json:"pings"`
	IPerf3      string `json:"iperf3"`
	OpenVPN     string `json:"openvpn"`
	WireGuardGo string `json:"wireguard_go"`
	// The module version run.sh installed wireguard-go from (its --version
	// names only the release it is based on).
	WireGuardGoModule string `json:"wireguard_go_module"`
	Clients           int    `json:"clients"`
}

func (m machine) describe() string {
	commit := m.Commit
	if m.Dirty {
		commit += " plus uncommitted changes"
	}
	return fmt.Sprintf("%s, commit %s; %d × %s, Linux %s, %s; load average %s before, %s after",
		m.Date, commit, m.NProc, m.CPU, m.Kernel, m.Go, m.LoadBefore, m.LoadAfter)
}

// peakLoad is the higher of the 1-minute load averages before and after
// the run (0 when neither was recorded).
func (m machine) peakLoad() float64 {
	peak := 0.0
	for _, l := range []string{m.LoadBefore, m.LoadAfter} {
		var one float64
		if _, err := fmt.Sscanf(l, "%g", &one); err == nil {
			peak = max(peak, one)
		}
	}
	return peak
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// replaceSection writes body between the markers of section in the
// Markdown file, appending the section if the file has no such markers and
// creating the file if needed.
func replaceSection(path, section, body string) error {
	old, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		old = []byte("# Performance\n")
	} else if err != nil {
		return err
	}
	out, err := withSection(old, section, body)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// withSection returns doc with body as the generated section named
// section: the text between its BEGIN and END markers is replaced, or, if
// doc has neither marker, the section is appended. A document with more than
// one BEGIN or END marker for the section, or an END before its BEGIN, is
// refused rather than rewritten, since replacing one copy would leave the
// other standing as stale text.
func withSection(doc []byte, section, body string) ([]byte, error) {
	begin := fmt.Sprintf("<!-- BEGIN %s: generated, do not edit by hand -->", section)
	end := fmt.Sprintf("<!-- END %s -->", section)
	block := begin + "\n" + strings.TrimSpace(body) + "\n" + end
	nb, ne := bytes.Count(doc, []byte(begin)), bytes.Count(doc, []byte(end))
	if nb == 0 && ne == 0 {
		out := append(bytes.TrimRight(bytes.Clone(doc), "\n"), "\n\n"...)
		out = append(out, block...)
		return append(out, '\n'), nil
	}
	i, j := bytes.Index(doc, []byte(begin)), bytes.Index(doc, []byte(end))
	if nb != 1 || ne != 1 || j < i {
		return nil, fmt.Errorf("markers for %s: %d BEGIN and %d END, want one of each in that order", section, nb, ne)
	}
	out := append([]byte{}, doc[:i]...)
	out = append(out, block...)
	return append(out, doc[j+len(end):]...), nil
}

// ratio formats a/b as "1.23×", or "–" when either is missing.
func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func num(v float64, format string) string {
	if v <= 0 {
		return "–"
	}
	return fmt.Sprintf(format, v)
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}
