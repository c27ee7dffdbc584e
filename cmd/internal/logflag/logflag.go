// Package logflag gives the project's binaries one meaning for their
// -log-level and -log-format flags, so an operator configures the server
// and the client the same way.
package logflag

import (
	"fmt"
	"io"
	"log/slog"
)

// Options are the parsed logging flags.
type Options struct {
	Level slog.Level
	JSON  bool
}

// Parse checks the flag values; errors name the flag.
func Parse(level, format string) (Options, error) {
	var o Options
	if err := o.Level.UnmarshalText([]byte(level)); err != nil {
		return o, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	switch format {
	case "text":
	case "json":
		o.JSON = true
	default:
		return o, fmt.Errorf("-log-format %q: want text or json", format)
	}
	return o, nil
}

// New makes the logger the flags describe.
func (o Options) New(w io.Writer) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.Level}
	if o.JSON {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}
