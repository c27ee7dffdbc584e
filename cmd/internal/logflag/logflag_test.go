package logflag

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		level, format string
		want          Options
		errFlag       string
	}{
		{"info", "text", Options{Level: slog.LevelInfo}, ""},
		{"debug", "json", Options{Level: slog.LevelDebug, JSON: true}, ""},
		{"WARN", "text", Options{Level: slog.LevelWarn}, ""},
		{"loud", "text", Options{}, "-log-level"},
		{"info", "xml", Options{}, "-log-format"},
	}
	for _, tc := range tests {
		got, err := Parse(tc.level, tc.format)
		if tc.errFlag != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errFlag) {
				t.Errorf("Parse(%q, %q) error = %v, want one naming %s", tc.level, tc.format, err, tc.errFlag)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q, %q) = %+v, %v; want %+v", tc.level, tc.format, got, err, tc.want)
		}
	}
}

func TestNewHonoursFormatAndLevel(t *testing.T) {
	var buf bytes.Buffer
	Options{Level: slog.LevelWarn, JSON: true}.New(&buf).Info("hidden")
	Options{Level: slog.LevelWarn, JSON: true}.New(&buf).Warn("shown")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) {
		t.Fatalf("log output %q", out)
	}
}
