//go:build linux

package secure

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
)

// TestKernelFilterAcrossUpgrade: the kernel filter outlives vknetctl
// upgrade, with its counts. The new daemon takes over the old one's
// loaded program and counter map, so under --user, where it may not load
// BPF, the spoofed frames of a client that connects after the upgrade are
// dropped in the kernel (kernel-filter, none read), not in userspace; and
// as root or not, the counts of the client before, of the datagram
// listener and of the totals are the same after the upgrade and go on.
func TestKernelFilterAcrossUpgrade(t *testing.T) {
	testbed.RequireRoot(t)
	vknetctl, remove, err := testbed.BuildCommand("vknetctl")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	for _, user := range []string{"nobody", ""} {
		name := "user=" + user
		if user == "" {
			name = "root"
		}
		t.Run(name, func(t *testing.T) {
			var extra []string
			if user != "" {
				extra = []string{"--user", user}
			}
			// nobody must be able to run the new binary, and use the
			// listener's directory: not root's 0700 ones.
			dir := testbed.ShortTempDir(t)
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(dir, "vknetd")
			copyBinary(t, vknetd, bin)
			listener := filepath.Join(dir, "dgram")
			d := &daemon{p: startFilterDaemonOf(t, bin, nil, append(extra, "--dgram", listener)...)}
			if !strings.Contains(d.p.Output(), "kernel_filter=true") {
				t.Fatalf("the kernel filter is not on:\n%s", d.p.Output())
			}
			ctl := d.p.Sock + ".ctl"
			spoof := testbed.IPv4UDP(macA, testbed.Broadcast, outsideIP, tapIP, 40000, 9, nil)
			send := func(c *testbed.SeqpacketClient, n int) {
				for i := 0; i < n; i++ {
					c.Send(t, spoof)
				}
			}
			before, beforePort := d.connect(t)
			send(before, 3)
			dg, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(dg)
			if err := unix.Bind(dg, &unix.SockaddrUnix{Name: filepath.Join(dir, "vm")}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				if err := unix.Sendto(dg, spoof, 0, &unix.SockaddrUnix{Name: listener}); err != nil {
					t.Fatal(err)
				}
			}
			if !waitKernelDrops(t, d, ctl, map[int]uint64{beforePort: 3}, 5, "before the upgrade") {
				return
			}

			upgradeDaemon(t, vknetctl, d.p, ctl)
			if !tookOverWithFilter(d.p.Output()) {
				t.Errorf("the new daemon says it has no kernel filter:\n%s", d.p.Output())
			}
			after, afterPort := d.connect(t)
			send(after, 3)
			waitKernelDrops(t, d, ctl, map[int]uint64{afterPort: 3}, anyTotal,
				"a client connected after the upgrade (filtered in the kernel, not in userspace)")
			waitKernelDrops(t, d, ctl, map[int]uint64{beforePort: 3}, 5+3,
				"the client from before (its count carried, with the listener's)")
			send(before, 2)
			waitKernelDrops(t, d, ctl, map[int]uint64{beforePort: 5, afterPort: 3}, 10,
				"the client from before (still filtered, counting on)")
		})
	}
}

// TestKernelFilterAcrossCrash: under --supervise --user, the daemon the
// supervisor starts after a kill -9 takes over the first daemon's filter
// the same way (the supervisor holds its fds with the others): a client
// that connects after the crash is filtered in the kernel, and the count
// of the one from before goes on.
func TestKernelFilterAcrossCrash(t *testing.T) {
	testbed.RequireRoot(t)
	dir := testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "vknetd")
	copyBinary(t, vknetd, bin)
	d := &daemon{p: startFilterDaemonOf(t, bin, nil, "--user", "nobody", "--supervise")}
	pidfile := filepath.Join(filepath.Dir(d.p.Sock), "vknetd.pid")
	ctl := d.p.Sock + ".ctl"
	daemonPid := func() int {
		b, _ := os.ReadFile(pidfile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	// The supervisor ignores SIGTERM: stop the daemon, and it follows.
	// Never kill pid 0 (this test's process group) for a pidfile read
	// while it is rewritten.
	t.Cleanup(func() {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if pid := daemonPid(); pid > 1 && pid != d.p.Pid() {
				syscall.Kill(pid, syscall.SIGTERM)
				d.p.Wait(10 * time.Second)
				return
			}
		}
	})
	spoof := testbed.IPv4UDP(macA, testbed.Broadcast, outsideIP, tapIP, 40000, 9, nil)
	before, beforePort := d.connect(t)
	for i := 0; i < 3; i++ {
		before.Send(t, spoof)
	}
	if !waitKernelDrops(t, d, ctl, map[int]uint64{beforePort: 3}, 3, "before the crash") {
		return
	}
	first := daemonPid()
	if first <= 0 || first == d.p.Pid() {
		t.Fatalf("the pidfile names %d, the supervisor is %d", first, d.p.Pid())
	}
	syscall.Kill(first, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for pid := daemonPid(); pid == first || pid <= 0 || !strings.Contains(d.p.Output(), `msg="vknetd took over"`); pid = daemonPid() {
		if time.Now().After(deadline) {
			t.Fatalf("no new daemon within 10 s of kill -9:\n%s", d.p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !tookOverWithFilter(d.p.Output()) {
		t.Errorf("the daemon started after the crash says it has no kernel filter:\n%s", d.p.Output())
	}
	after, afterPort := d.connect(t)
	for i := 0; i < 3; i++ {
		after.Send(t, spoof)
		before.Send(t, spoof)
	}
	waitKernelDrops(t, d, ctl, map[int]uint64{beforePort: 6, afterPort: 3}, 9, "after the crash")
}

// tookOverWithFilter says whether the new daemon's "took over" line
// says kernel_filter=true.
func tookOverWithFilter(out string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `msg="vknetd took over"`) && strings.Contains(l, "kernel_filter=true") {
			return true
		}
	}
	return false
}

// anyTotal: waitKernelDrops checks the ports alone.
const anyTotal = ^uint64(0)

// waitKernelDrops waits until each port in want shows exactly its count of
// kernel-filter drops and read none of its frames, and the switch's total
// is total (the ports' and the datagram listener's), and says whether
// they did. The kernel counts in the sender's sendmsg, so the counts are
// there when the sends return; the wait is for a daemon's accept of a
// client and for vknetctl's answer.
func waitKernelDrops(t *testing.T, d *daemon, ctl string, want map[int]uint64, total uint64, when string) bool {
	t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ok, got := kernelDropsAre(ctl, want, total)
		if ok {
			return true
		}
		last = got
		if time.Now().After(deadline) {
			break
		}
	}
	wantTotal := "any"
	if total != anyTotal {
		wantTotal = strconv.FormatUint(total, 10)
	}
	t.Errorf("%s: want kernel-filter drops %v, total %s, no frame read; have %s\ndaemon:\n%s", when, want, wantTotal, last, d.p.Output())
	return false
}

func kernelDropsAre(ctl string, want map[int]uint64, total uint64) (bool, string) {
	c, err := control.Dial(ctl)
	if err != nil {
		return false, err.Error()
	}
	defer c.Close()
	ports, err := c.Ports()
	if err != nil {
		return false, err.Error()
	}
	st, err := c.Stats()
	if err != nil {
		return false, err.Error()
	}
	var b strings.Builder
	ok := total == anyTotal || st.Drops[kernelFilter] == total
	b.WriteString("total " + strconv.FormatUint(st.Drops[kernelFilter], 10))
	seen := 0
	for _, p := range ports {
		w, mine := want[int(p.ID)]
		if !mine {
			continue
		}
		seen++
		b.WriteString(", port " + strconv.Itoa(int(p.ID)) + ": " + strconv.FormatUint(p.Drops[kernelFilter], 10) +
			" rx_frames " + strconv.FormatUint(p.RxFrames, 10))
		for r, n := range p.Drops {
			if r != kernelFilter {
				b.WriteString(" " + r + " " + strconv.FormatUint(n, 10))
				ok = false
			}
		}
		ok = ok && p.Drops[kernelFilter] == w && p.RxFrames == 0
	}
	return ok && seen == len(want), b.String()
}

// upgradeDaemon runs vknetctl upgrade on d and returns the new daemon's
// pid, which is stopped at the test's end (it is no Proc of the test's).
func upgradeDaemon(t *testing.T, vknetctl string, d *testbed.Daemon, ctl string) int {
	t.Helper()
	out, err := exec.Command(vknetctl, "-s", ctl, "upgrade").CombinedOutput()
	if err != nil {
		t.Fatalf("vknetctl upgrade: %v\n%s\ndaemon:\n%s", err, out, d.Output())
	}
	pid, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(string(out), "vknetd upgraded: pid "), " serves now\n"))
	if pid <= 0 {
		t.Fatalf("vknetctl upgrade said %q", out)
	}
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGTERM)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
				return
			}
		}
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("the upgraded vknetd (pid %d) did not stop on SIGTERM", pid)
	})
	return pid
}

func copyBinary(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
