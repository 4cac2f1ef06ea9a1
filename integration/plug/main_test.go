//go:build linux

package plug

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/vknetd/vknetd/internal/testbed"
)

// The binaries under test, built once by TestMain; empty when the tests
// cannot run here (they skip with skipReason).
var vknetd, vknetplug, skipReason string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipReason = "needs root: the tests create network namespaces and TAP devices (run as root; CI does)"
	}
	for _, tool := range []string{"ip", "ping"} {
		if _, err := exec.LookPath(tool); err != nil && skipReason == "" {
			skipReason = fmt.Sprintf("the tests need %s in PATH (make deps installs it)", tool)
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	for _, b := range []struct {
		name string
		bin  *string
	}{{"vknetd", &vknetd}, {"vknetplug", &vknetplug}} {
		path, remove, err := testbed.BuildCommand(b.name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "integration/plug: %v\n", err)
			return 1
		}
		defer remove()
		*b.bin = path
	}
	return m.Run()
}

func needRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
