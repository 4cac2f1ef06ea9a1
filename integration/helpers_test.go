//go:build linux

package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// result is how a command that ran to completion ended.
type result struct {
	stdout, stderr string
	code           int
}

// runToExit runs a command in ns that must end by itself within timeout.
func runToExit(t *testing.T, timeout time.Duration, ns *testbed.Netns, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := ns.Command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not exit within %v in %s (stdout %q, stderr %q)", strings.Join(args, " "), timeout, ns.Name, out.String(), errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", args[0], err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
