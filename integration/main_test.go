//go:build linux

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/vknetd/vknetd/internal/testbed"
)

// vknetd is the binary under test, built once by TestMain; empty when the
// tests cannot run here (they skip).
var vknetd string

// skipReason says why vknetd was not built.
var skipReason string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipReason = "needs root: integration tests create network namespaces and TAP devices (run as root; CI does)"
	}
	for _, tool := range []string{"ip", "ping", "socat", "prlimit"} {
		if skipReason == "" {
			if _, err := exec.LookPath(tool); err != nil {
				skipReason = fmt.Sprintf("integration tests need %s in PATH (make deps installs it)", tool)
			}
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	return testbed.RunWithVknetd(m, "integration", &vknetd)
}

// needRoot skips t when the binary could not be built here.
func needRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
