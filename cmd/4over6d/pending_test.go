package main

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/4over6d/4over6d/messages"
)

// TestPendingConsoleAnswers501 checks what the API says, until the engine
// branches are merged, for the calls the engine does not have yet.
func TestPendingConsoleAnswers501(t *testing.T) {
	var p pendingConsole
	_, kickErr := p.Kick(netip.MustParseAddr("192.0.2.2"), 0)
	_, listErr := p.Reservations()
	_, poolErr := p.Pool()
	for _, err := range []error{kickErr, listErr, poolErr, p.Reserve(messages.Static{}), p.Unreserve(netip.MustParseAddr("2001:db8::5"))} {
		rec := httptest.NewRecorder()
		writeError(rec, err)
		if rec.Code != http.StatusNotImplemented || !strings.Contains(rec.Body.String(), "not available") {
			t.Errorf("%v answers %d %s, want 501", err, rec.Code, rec.Body.String())
		}
	}
}
