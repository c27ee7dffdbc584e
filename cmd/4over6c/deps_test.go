package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The client speaks only the wire format: it must not link the server's
// actor runtime (a bigger binary and a dependency lab machines do not need).
func TestClientDoesNotLinkTheActorRuntime(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "protoactor") || pkg == "github.com/4over6d/4over6d/actors" || pkg == "github.com/4over6d/4over6d/messages" {
			t.Errorf("4over6c depends on %s", pkg)
		}
	}
}
