//go:build linux

package integration

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// A script that starts vknetd and stops it at once (a service manager
// restarting it, a test harness) must still get a clean stop: the command
// should report ready only once SIGTERM is handled.
func TestSIGTERMRightAfterStartIsHandled(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	dir := testbed.ShortTempDir(t)
	sock, pidfile := filepath.Join(dir, "vknet"), filepath.Join(dir, "vknetd.pid")
	// The window is short; 40 tries make a miss unlikely.
	for i := 0; i < 40; i++ {
		r := runToExit(t, 15*time.Second, ns, vknetd, "-U", "-p", sock, "-i", pidfile, "--group", "root")
		if r.code != 0 {
			t.Fatalf("try %d: background start exited with %d; stderr:\n%s", i, r.code, r.stderr)
		}
		pid := readPidfile(t, pidfile)
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatalf("try %d: %v", i, err)
		}
		if !waitFor(5*time.Second, func() bool { return !testbed.ProcessAlive(pid) }) {
			t.Fatalf("try %d: vknetd (pid %d) did not stop within 5s of SIGTERM", i, pid)
		}
		if fileExists(sock) || fileExists(pidfile) {
			t.Fatalf("try %d: SIGTERM sent as soon as the start command returned killed vknetd without its clean-up: socket left: %v, pidfile left: %v",
				i, fileExists(sock), fileExists(pidfile))
		}
	}
}
