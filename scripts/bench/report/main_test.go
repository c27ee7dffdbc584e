package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func markers(section string) (begin, end string) {
	return "<!-- BEGIN " + section + ": generated, do not edit by hand -->", "<!-- END " + section + " -->"
}

func TestWithSectionReplacesBetweenMarkers(t *testing.T) {
	b, e := markers("scripts/bench/scale.sh")
	doc := "# Performance\n\nintro\n\n" + b + "\nold table\n" + e + "\n\n### Targets of the issue\n\nhand-written\n"
	got, err := withSection([]byte(doc), "scripts/bench/scale.sh", "\nnew table\n\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Performance\n\nintro\n\n" + b + "\nnew table\n" + e + "\n\n### Targets of the issue\n\nhand-written\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	again, err := withSection(got, "scripts/bench/scale.sh", "new table")
	if err != nil || !bytes.Equal(again, got) {
		t.Fatalf("a second run with the same body changed the document (%v):\n%s", err, again)
	}
}

func TestWithSectionAppendsOnceThenReplaces(t *testing.T) {
	doc := []byte("# Performance\n\nintro\n\n\n")
	first, err := withSection(doc, "scripts/bench/run.sh", "run 1")
	if err != nil {
		t.Fatal(err)
	}
	b, e := markers("scripts/bench/run.sh")
	if want := "# Performance\n\nintro\n\n" + b + "\nrun 1\n" + e + "\n"; string(first) != want {
		t.Fatalf("appended:\n%q\nwant\n%q", first, want)
	}
	second, err := withSection(first, "scripts/bench/run.sh", "run 2")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(second), b); n != 1 || strings.Contains(string(second), "run 1") || !strings.Contains(string(second), "run 2") {
		t.Fatalf("second run: %d sections, want the one, replaced:\n%s", n, second)
	}
}

func TestWithSectionLeavesOtherSections(t *testing.T) {
	rb, re := markers("scripts/bench/run.sh")
	sb, se := markers("scripts/bench/scale.sh")
	doc := rb + "\nrun\n" + re + "\n\n" + sb + "\nscale\n" + se + "\n"
	got, err := withSection([]byte(doc), "scripts/bench/run.sh", "run 2")
	if err != nil {
		t.Fatal(err)
	}
	if want := rb + "\nrun 2\n" + re + "\n\n" + sb + "\nscale\n" + se + "\n"; string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestWithSectionRefusesBrokenMarkers(t *testing.T) {
	b, e := markers("scripts/bench/scale.sh")
	for name, doc := range map[string]string{
		// The shape docs/performance.md once had: a stale copy of the
		// section's tail, END marker included, after the real block.
		"second END":   b + "\nnew\n" + e + "\n\nstale rows\n" + e + "\n",
		"second BEGIN": b + "\na\n" + e + "\n" + b + "\nb\n" + e + "\n",
		"END first":    e + "\nx\n" + b + "\n",
		"BEGIN only":   "text\n" + b + "\nx\n",
		"END only":     "text\n" + e + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := withSection([]byte(doc), "scripts/bench/scale.sh", "body"); err == nil {
				t.Fatalf("accepted, wrote:\n%s", got)
			}
		})
	}
}

func TestReplaceSectionFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs", "performance.md")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := replaceSection(path, "scripts/bench/scale.sh", "one"); err != nil {
		t.Fatal(err)
	}
	if err := replaceSection(path, "scripts/bench/scale.sh", "two"); err != nil {
		t.Fatal(err)
	}
	b, e := markers("scripts/bench/scale.sh")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "# Performance\n\n" + b + "\ntwo\n" + e + "\n"; string(got) != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}

// TestPerformanceDocHasEachSectionOnce checks the real document: each
// generated section is there exactly once, and regenerating it with its
// current body leaves the file as it is.
func TestPerformanceDocHasEachSectionOnce(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/performance.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"scripts/bench/run.sh", "scripts/bench/scale.sh"} {
		b, e := markers(section)
		i, j := bytes.Index(doc, []byte(b)), bytes.Index(doc, []byte(e))
		if i < 0 || j < i {
			t.Fatalf("%s: no generated section", section)
		}
		got, err := withSection(doc, section, string(doc[i+len(b):j]))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, doc) {
			t.Errorf("%s: regenerating with the same body changes docs/performance.md", section)
		}
	}
}

// The 4over6-rate runs get their own table, as ratios to the limit, and
// the smoke check expects exactly their two metrics.
func TestRateLimitTable(t *testing.T) {
	rs := results{
		"4over6-8mbit":   {"tcp_up": {Mbit: 7.9}, "tcp_down": {Mbit: 6}},
		"4over6-100mbit": {"tcp_up": {Mbit: 98}},
	}
	md := benchMarkdown(machine{}, rs, "", "")
	for _, want := range []string{
		"| `-rate-limit 8mbit` | 7.90 (0.99×) | 6.00 (0.75×) |",
		"| `-rate-limit 100mbit` | 98.00 (0.98×) | – |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if md := benchMarkdown(machine{}, results{}, "", ""); strings.Contains(md, "-rate-limit") {
		t.Errorf("a run without the rate case reports it:\n%s", md)
	}
	if got := expandCases("4over6,4over6-rate"); strings.Join(got, " ") != "4over6 4over6-8mbit 4over6-100mbit" {
		t.Errorf("expandCases = %q", got)
	}
	if got := metricsFor("4over6-8mbit"); strings.Join(got, " ") != "tcp_up tcp_down" {
		t.Errorf("metricsFor(4over6-8mbit) = %q", got)
	}
}
