//go:build linux

package secure

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// vknetd is the binary under test, built once by TestMain; empty when the
// tests cannot run here.
var vknetd string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	if os.Geteuid() != 0 {
		// Every test skips with testbed.RequireRoot's message; building
		// would be wasted.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "vknetd-secure-it-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration/secure: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		fmt.Fprintf(os.Stderr, "integration/secure: go env GOMOD found no go.mod (%v): run the tests inside the vknetd module\n", err)
		return 1
	}
	vknetd = filepath.Join(dir, "vknetd")
	build := exec.Command("go", "build", "-o", vknetd, "./cmd/vknetd")
	build.Dir = filepath.Dir(gomod)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration/secure: go build ./cmd/vknetd: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
