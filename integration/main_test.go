//go:build linux

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	reapStaleNetns()
	dir, err := os.MkdirTemp("", "vknetd-it-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	vknetd = filepath.Join(dir, "vknetd")
	build := exec.Command("go", "build", "-o", vknetd, "./cmd/vknetd")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: go build ./cmd/vknetd in %s: %v\n%s", root, err, out)
		return 1
	}
	return m.Run()
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD found no go.mod: run the tests inside the vknetd module")
	}
	return filepath.Dir(gomod), nil
}

// needRoot skips t when the binary could not be built here.
func needRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
