//go:build linux

package secure

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
)

// TestKernelFilterRestoredOnRollback: a new binary whose kernel filter
// has other rules attaches it to the sockets it adopts (the clients', the
// datagram listener's: the same sockets the running daemon serves), then
// refuses the upgrade. The daemon that keeps serving puts its own filter
// back on every one of them before it serves again: the spoofed frames a
// client sends after the rollback, which the other rules would pass, are
// dropped in the kernel (kernel-filter, none read), on the client's socket
// and on the datagram listener, as before the upgrade.
func TestKernelFilterRestoredOnRollback(t *testing.T) {
	testbed.RequireRoot(t)
	vknetctl, remove, err := testbed.BuildCommand("vknetctl")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	dir := testbed.ShortTempDir(t)
	otherRules := filepath.Join(dir, "vknetd-other-rules")
	root, err := testbed.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The tag makes a binary that loads other rules and then fails
	// (cmd/vknetd/rollbacktest_linux.go); never built otherwise.
	build := exec.Command("go", "build", "-tags", "vknetd_rollback_test", "-o", otherRules, "./cmd/vknetd")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags vknetd_rollback_test ./cmd/vknetd: %v\n%s", err, out)
	}

	listener := filepath.Join(dir, "dgram")
	d := &daemon{p: startFilterDaemonOf(t, vknetd, nil, "--dgram", listener)}
	if !strings.Contains(d.p.Output(), "kernel_filter=true") {
		t.Fatalf("the kernel filter is not on:\n%s", d.p.Output())
	}
	ctl := d.p.Sock + ".ctl"
	spoof := testbed.IPv4UDP(macA, testbed.Broadcast, outsideIP, tapIP, 40000, 9, nil)
	dg, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dg)
	if err := unix.Bind(dg, &unix.SockaddrUnix{Name: filepath.Join(dir, "vm")}); err != nil {
		t.Fatal(err)
	}
	client, port := d.connect(t)
	send := func(n int) {
		for i := 0; i < n; i++ {
			client.Send(t, spoof)
			if err := unix.Sendto(dg, spoof, 0, &unix.SockaddrUnix{Name: listener}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(2)
	if !waitKernelDrops(t, d, ctl, map[int]uint64{port: 2}, 4, "before the upgrade") {
		return
	}

	out, err := exec.Command(vknetctl, "-s", ctl, "upgrade", otherRules).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "keeps serving") {
		t.Fatalf("vknetctl upgrade to the other rules' binary: %v, %q; want exit status 1, keeps serving\ndaemon:\n%s", err, out, d.p.Output())
	}
	if !strings.Contains(string(out), "vknetd_rollback_test") {
		t.Fatalf("the upgrade failed before the other rules' binary adopted the clients: %s\ndaemon:\n%s", out, d.p.Output())
	}
	send(3)
	waitKernelDrops(t, d, ctl, map[int]uint64{port: 5}, 10,
		"after the rollback (the running daemon's filter back on the client's socket and the datagram listener)")
}
