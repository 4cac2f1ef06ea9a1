//go:build linux

package integration

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
	"golang.org/x/sys/unix"
)

func TestBridgeCreatedThenRemoved(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	d := startDaemon(t, ns, testbed.DaemonConfig{Args: []string{"-U", "-b", "vkbr0"}})
	show, ok := ns.LinkShow(d.TAP)
	if !ok || !strings.Contains(show, " master vkbr0 ") {
		t.Fatalf("TAP %s is not a member of bridge vkbr0:\n%s", d.TAP, show)
	}
	br, ok := ns.LinkShow("vkbr0")
	if !ok || !strings.Contains(br, "bridge ") || !testbed.HasFlag(br, "UP") {
		t.Fatalf("bridge vkbr0 is missing, not a bridge or not up:\n%s", br)
	}
	if code := d.stop(); code != 0 {
		t.Fatalf("vknetd exited with %d after SIGTERM; stderr:\n%s", code, d.Stderr())
	}
	if show, ok := ns.LinkShow("vkbr0"); ok {
		t.Errorf("the bridge vknetd created is still there after SIGTERM:\n%s", show)
	}
	if show, ok := ns.LinkShow(d.TAP); ok {
		t.Errorf("the TAP vknetd created is still there after SIGTERM:\n%s", show)
	}
}

func TestExistingBridgeIsKeptAsFound(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	ns.Run(t, "ip", "link", "add", "vkbr1", "type", "bridge") // left down
	d := startDaemon(t, ns, testbed.DaemonConfig{Args: []string{"-U", "-b", "vkbr1"}})
	if show, ok := ns.LinkShow(d.TAP); !ok || !strings.Contains(show, " master vkbr1 ") {
		t.Fatalf("TAP %s is not a member of bridge vkbr1:\n%s", d.TAP, show)
	}
	if br, _ := ns.LinkShow("vkbr1"); !testbed.HasFlag(br, "UP") {
		t.Fatalf("vknetd did not bring bridge vkbr1 up:\n%s", br)
	}
	if code := d.stop(); code != 0 {
		t.Fatalf("vknetd exited with %d after SIGTERM; stderr:\n%s", code, d.Stderr())
	}
	br, ok := ns.LinkShow("vkbr1")
	if !ok {
		t.Fatalf("vknetd deleted bridge vkbr1, which existed before it started")
	}
	if testbed.HasFlag(br, "UP") {
		t.Errorf("bridge vkbr1 was down before vknetd started and is still up after it stopped:\n%s", br)
	}
	if show, ok := ns.LinkShow(d.TAP); ok {
		t.Errorf("the TAP vknetd created is still there after SIGTERM:\n%s", show)
	}
}

func TestSIGTERMLeavesNothingBehind(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	d := startDaemon(t, ns, testbed.DaemonConfig{Args: []string{"198.18.0.1/16"}})
	if !regexp.MustCompile(`^tap\d+$`).MatchString(d.TAP) {
		t.Errorf("without -t the kernel should pick a tapN name; vknetd printed %q", d.TAP)
	}
	if got := readPidfile(t, d.Pidfile); got != d.Pid() {
		t.Errorf("pidfile %s holds %d, want the daemon's pid %d", d.Pidfile, got, d.Pid())
	}
	c := d.connect(testMAC(1))

	if code := d.stop(); code != 0 {
		t.Errorf("vknetd exited with status %d after SIGTERM, want 0; stderr:\n%s", code, d.Stderr())
	}
	if fileExists(d.Sock) {
		t.Errorf("socket %s is still there after SIGTERM", d.Sock)
	}
	if fileExists(d.Pidfile) {
		t.Errorf("pidfile %s is still there after SIGTERM", d.Pidfile)
	}
	if show, ok := ns.LinkShow(d.TAP); ok {
		t.Errorf("the TAP vknetd created is still there after SIGTERM:\n%s", show)
	}
	c.expectEOF(2 * time.Second)
}

func TestPidfileLockRefusesASecondDaemon(t *testing.T) {
	needRoot(t)
	dir := testbed.ShortTempDir(t)
	pidfile := filepath.Join(dir, "shared.pid")
	first := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Pidfile: pidfile, Args: []string{"-U"}})

	_, err := tryStartDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Sock: filepath.Join(dir, "other"), Pidfile: pidfile, Args: []string{"-U"}})
	var se *testbed.StartError
	if !errors.As(err, &se) {
		t.Fatalf("a second daemon with the same -i started (or hung): %v", err)
	}
	if se.Code == 0 || !strings.Contains(se.Stderr, pidfile) {
		t.Errorf("second daemon: exit status %d, stderr %q; want non-zero and a message naming %s", se.Code, se.Stderr, pidfile)
	}
	if fileExists(filepath.Join(dir, "other")) {
		t.Errorf("the refused daemon left its socket behind")
	}
	first.requireRunning()
	if got := readPidfile(t, pidfile); got != first.Pid() {
		t.Errorf("pidfile holds %d after the refused start, want the running daemon's %d", got, first.Pid())
	}
}

func TestLiveSocketIsNotTakenOver(t *testing.T) {
	needRoot(t)
	dir := testbed.ShortTempDir(t)
	sock := filepath.Join(dir, "vknet")
	first := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Sock: sock, Args: []string{"-U"}})

	otherPid := filepath.Join(dir, "other.pid")
	_, err := tryStartDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Sock: sock, Pidfile: otherPid, Args: []string{"-U"}})
	var se *testbed.StartError
	if !errors.As(err, &se) {
		t.Fatalf("a second daemon on the same -p started (or hung): %v", err)
	}
	if se.Code == 0 || !strings.Contains(se.Stderr, "another daemon is serving") || !strings.Contains(se.Stderr, sock) {
		t.Errorf("second daemon: exit status %d, stderr %q; want non-zero and \"another daemon is serving on %s\"", se.Code, se.Stderr, sock)
	}
	if fileExists(otherPid) {
		t.Errorf("the refused daemon left its pidfile %s behind", otherPid)
	}
	// The first daemon still owns the path and serves on it.
	first.requireRunning()
	a, b := first.connect(testMAC(1)), first.connect(testMAC(2))
	a.send(rawFrame(testbed.Broadcast, a.mac, tagBroadcast, 1))
	b.expect(tagBroadcast, 2*time.Second)
}

func TestStaleSocketIsReplaced(t *testing.T) {
	needRoot(t)
	sock := filepath.Join(testbed.ShortTempDir(t), "vknet")
	// A daemon killed with SIGKILL leaves exactly this: a socket file
	// nobody listens on.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("setting up the stale socket: %v %v", fi, err)
	}

	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Sock: sock, Args: []string{"-U"}})
	a, b := d.connect(testMAC(1)), d.connect(testMAC(2))
	a.send(rawFrame(testbed.Broadcast, a.mac, tagBroadcast, 1))
	b.expect(tagBroadcast, 2*time.Second)
}

func TestBackgroundStartPrintsTAPAndKeepsRunning(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	dir := testbed.ShortTempDir(t)
	sock, pidfile := filepath.Join(dir, "vknet"), filepath.Join(dir, "vknetd.pid")
	r := runToExit(t, 15*time.Second, ns, vknetd, "-U", "-p", sock, "-i", pidfile, "--group", "root")
	if r.code != 0 {
		t.Fatalf("background start exited with %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	tap := strings.TrimSpace(r.stdout)
	if !regexp.MustCompile(`^tap\d+$`).MatchString(tap) {
		t.Fatalf("background start printed %q on stdout, want the TAP name alone", r.stdout)
	}
	pid := readPidfile(t, pidfile)
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitFor(5*time.Second, func() bool { return !testbed.ProcessAlive(pid) }) {
			t.Errorf("background vknetd (pid %d) did not stop within 5s of SIGTERM", pid)
		}
	})
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err != nil || exe != vknetd {
		t.Fatalf("pidfile holds %d, which is %q (%v), not the running vknetd", pid, exe, err)
	}
	if _, ok := ns.LinkShow(tap); !ok {
		t.Errorf("printed TAP %s does not exist in the daemon's namespace", tap)
	}
	// Two clients exchange a frame: the daemon serves its socket (and has
	// its signal handlers, see TestSIGTERMRightAfterStartIsHandled).
	a, b := dialRaw(t, sock, testMAC(1)), dialRaw(t, sock, testMAC(2))
	a.send(rawFrame(testbed.Broadcast, a.mac, tagBroadcast, 1))
	b.expect(tagBroadcast, 2*time.Second)

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return !testbed.ProcessAlive(pid) }) {
		t.Fatalf("background vknetd (pid %d) did not stop within 5s of SIGTERM", pid)
	}
	if fileExists(sock) || fileExists(pidfile) {
		t.Errorf("background vknetd left socket (%v) or pidfile (%v) behind", fileExists(sock), fileExists(pidfile))
	}
}

func TestBackgroundStartFailureReportsTheReason(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	ns.Run(t, "ip", "link", "add", "vkt-veth0", "type", "veth", "peer", "name", "vkt-veth1")
	for _, tc := range []struct {
		name string
		args []string
		want []string // all in stderr
	}{
		{"missing group", []string{"-U", "--group", "vkt-no-such-group"}, []string{"groupadd vkt-no-such-group"}},
		{"-t names a veth", []string{"-U", "--group", "root", "-t", "vkt-veth0"}, []string{"vkt-veth0", "-t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testbed.ShortTempDir(t)
			sock, pidfile := filepath.Join(dir, "vknet"), filepath.Join(dir, "vknetd.pid")
			args := append([]string{vknetd, "-p", sock, "-i", pidfile}, tc.args...)
			r := runToExit(t, 15*time.Second, ns, args...)
			if r.code == 0 {
				t.Fatalf("background start succeeded (stdout %q), want a failure", r.stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not name %q", r.stderr, w)
				}
			}
			if r.stdout != "" {
				t.Errorf("a failed start printed %q on stdout; scripts would take it for a TAP name", r.stdout)
			}
			if fileExists(sock) || fileExists(pidfile) {
				t.Errorf("failed start left socket (%v) or pidfile (%v) behind", fileExists(sock), fileExists(pidfile))
			}
			if pids := ns.Pids(); len(pids) != 0 {
				t.Errorf("processes %v are still running in the namespace after a failed start", pids)
			}
		})
	}
	if show, ok := ns.LinkShow("vkt-veth0"); !ok || strings.Contains(show, "tun") {
		t.Errorf("the veth given with -t was not left as found:\n%s", show)
	}
}

func TestSocketModeAndGroup(t *testing.T) {
	needRoot(t)
	var group *user.Group
	for _, name := range []string{"daemon", "nogroup", "users"} {
		if g, err := user.LookupGroup(name); err == nil && g.Gid != "0" {
			group = g
			break
		}
	}
	if group == nil {
		t.Skip("no non-root group (daemon, nogroup, users) exists on this machine")
	}
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Group: group.Name, Args: []string{"-U"}})
	fi, err := os.Lstat(d.Sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket %s has mode %v, want a socket with 0660", d.Sock, fi.Mode())
	}
	st := fi.Sys().(*syscall.Stat_t)
	if strconv.Itoa(int(st.Gid)) != group.Gid {
		t.Errorf("socket %s has gid %d, want %s (group %s)", d.Sock, st.Gid, group.Gid, group.Name)
	}

	_, err = tryStartDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Group: "vkt-no-such-group", Args: []string{"-U"}})
	var se *testbed.StartError
	if !errors.As(err, &se) {
		t.Fatalf("vknetd started with a missing --group: %v", err)
	}
	if se.Code == 0 || !strings.Contains(se.Stderr, "groupadd vkt-no-such-group") {
		t.Errorf("missing group: exit status %d, stderr %q; want non-zero and 'groupadd vkt-no-such-group'", se.Code, se.Stderr)
	}
}

func TestUsageErrorsExitWithStatus2(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	for _, tc := range []struct {
		arg  string // the positional argument, or "" for none
		want string
	}{
		{"198.18.0.1/0", "198.18.0.1/0"},
		{"", "address/cidrbits"},
		{"300.1.2.3/8", "300.1.2.3/8"},
		{"198.18.0.1", "198.18.0.1"},
		{"198.18.0.1/33", "198.18.0.1/33"},
	} {
		name := tc.arg
		if name == "" {
			name = "no address"
		}
		t.Run(name, func(t *testing.T) {
			dir := testbed.ShortTempDir(t)
			// -d, -p, -i and the namespace only keep a daemon that wrongly
			// starts away from /var/run and the host's interfaces.
			args := []string{vknetd, "-d", "-p", filepath.Join(dir, "s"), "-i", filepath.Join(dir, "p"), "--group", "root"}
			if tc.arg != "" {
				args = append(args, tc.arg)
			}
			r := runToExit(t, 10*time.Second, ns, args...)
			if r.code != 2 {
				t.Errorf("exit status %d, want 2 (usage error); stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr does not name %q:\n%s", tc.want, r.stderr)
			}
		})
	}
}
