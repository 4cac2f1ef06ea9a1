//go:build linux

package integration

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// The unprivileged user the daemon gives root up to, and a VM owner who
// is neither root nor that user.
const (
	dropUser   = "nobody"
	vmOwnerUID = 4242
)

// capNetAdmin is CAP_NET_ADMIN (12) as /proc/PID/status prints a set.
const capNetAdmin = "0000000000001000"

// socketGroup is a group other than root's for the daemon's sockets.
func socketGroup(t *testing.T) *user.Group {
	t.Helper()
	for _, name := range []string{"daemon", "users", "nogroup"} {
		if g, err := user.LookupGroup(name); err == nil && g.Gid != "0" {
			return g
		}
	}
	t.Skip("no non-root group (daemon, users, nogroup) exists on this machine")
	return nil
}

func lookupDropUser(t *testing.T) *user.User {
	t.Helper()
	u, err := user.Lookup(dropUser)
	if err != nil {
		t.Skipf("no user %s on this machine: %v", dropUser, err)
	}
	return u
}

// startDroppingDaemon starts vknetd -U --user nobody with its files in a
// directory that VM owners can search (ShortTempDir is root's 0700).
func startDroppingDaemon(t *testing.T, ns *testbed.Netns, group string, args ...string) *daemon {
	t.Helper()
	dir := testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return startDaemon(t, ns, testbed.DaemonConfig{
		Sock:    filepath.Join(dir, "vknet"),
		Pidfile: filepath.Join(dir, "vknetd.pid"),
		Group:   group,
		Args:    append([]string{"-U", "--user", dropUser}, args...),
	})
}

func procStatus(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// childPids lists the processes whose parent is pid.
func childPids(pid int) []int {
	var kids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			kids = append(kids, child)
		}
	}
	return kids
}

// holds reports whether process pid has path open.
func holds(pid int, path string) bool {
	fds, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/fd/*")
	for _, fd := range fds {
		if target, _ := os.Readlink(fd); target == path {
			return true
		}
	}
	return false
}

// relayClient connects to the switch socket sock as an unprivileged VM
// owner (uid, gid, groups): socat runs with those credentials and relays,
// message by message, between the switch and a SEQPACKET socket of the
// test's, whose end the test gets. The switch sees socat's credentials.
func relayClient(t *testing.T, sock string, cred *syscall.Credential) (*net.UnixConn, error) {
	t.Helper()
	testbed.RequireTool(t, "socat")
	dir := testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	relay := filepath.Join(dir, "relay")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: relay, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(relay, 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("socat", "UNIX-CONNECT:"+sock+",type=5", "UNIX-CONNECT:"+relay+",type=5")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	type accepted struct {
		conn *net.UnixConn
		err  error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.AcceptUnix()
		acc <- accepted{c, err}
	}()
	var conn *net.UnixConn
	select {
	case a := <-acc:
		if a.err != nil {
			return nil, a.err
		}
		conn = a.conn
	case <-exited:
		exited <- nil // for the cleanup
		return nil, errors.New("socat exited: " + strings.TrimSpace(out.String()))
	}
	t.Cleanup(func() { conn.Close() })
	return conn, nil
}

// expectTag reads from conn until a test frame with tag arrives.
func expectTag(t *testing.T, conn *net.UnixConn, tag uint32, timeout time.Duration) {
	t.Helper()
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(timeout)
	for {
		conn.SetReadDeadline(deadline)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s through the relay: %v", tagName(tag), err)
		}
		if got, _, ok := marker(buf[:n]); ok && got == tag {
			return
		}
	}
}

// vknetd --user: once up, the daemon is the user with CAP_NET_ADMIN and
// nothing more, on every thread; clients (an unprivileged member of the
// socket group too) switch frames through it; a root keeper that holds no
// client socket waits beside it; SIGTERM still takes everything down.
func TestUserDropsRootAndStillServesAndCleansUp(t *testing.T) {
	needRoot(t)
	u, g := lookupDropUser(t), socketGroup(t)
	ns := testbed.NewNetns(t)
	d := startDroppingDaemon(t, ns, g.Name, "-b", "vkbr7")
	pid := d.Pid()

	rec := d.waitLog(5*time.Second, "gave up root", "user="+dropUser, "capabilities=cap_net_admin")
	if rec["uid"] != u.Uid {
		t.Errorf("log says uid %s, want %s's %s: %v", rec["uid"], dropUser, u.Uid, rec)
	}
	tasks, _ := filepath.Glob("/proc/" + itoa(pid) + "/task/*/status")
	if len(tasks) < 2 {
		t.Fatalf("vknetd has %d threads; the check below is meant to cover several", len(tasks))
	}
	for _, path := range tasks {
		st := procStatus(t, path)
		want := map[string]string{
			"Uid":        strings.Repeat(u.Uid+"\t", 3) + u.Uid,
			"Gid":        strings.Repeat(u.Gid+"\t", 3) + u.Gid,
			"CapEff":     capNetAdmin,
			"CapPrm":     capNetAdmin,
			"CapInh":     "0000000000000000",
			"CapAmb":     "0000000000000000",
			"NoNewPrivs": "1",
		}
		for k, v := range want {
			if st[k] != v {
				t.Errorf("%s: %s is %q, want %q", path, k, st[k], v)
			}
		}
		if groups := " " + st["Groups"] + " "; !strings.Contains(groups, " "+g.Gid+" ") || strings.Contains(groups, " 0 ") {
			t.Errorf("%s: supplementary groups %q, want the socket group %s and never 0", path, st["Groups"], g.Gid)
		}
	}

	// Nor does it keep the pidfile open: a writable descriptor to a root
	// file that systemd reads a pid from. The keeper holds it, and its lock.
	if holds(pid, d.Pidfile) {
		t.Errorf("vknetd still holds its pidfile %s open after giving up root", d.Pidfile)
	}

	kids := childPids(pid)
	if len(kids) != 1 {
		t.Fatalf("vknetd --user has %d children %v, want one keeper", len(kids), kids)
	}
	keeper := kids[0]
	if cmdline, _ := os.ReadFile("/proc/" + itoa(keeper) + "/cmdline"); !strings.HasPrefix(string(cmdline), "vknetd-keeper\x00") {
		t.Errorf("vknetd's child %d runs %q, want the keeper", keeper, cmdline)
	}
	// The keeper stays root: it must hold nothing a client can write to.
	fds, _ := filepath.Glob("/proc/" + itoa(keeper) + "/fd/*")
	for _, fd := range fds {
		if target, _ := os.Readlink(fd); strings.HasPrefix(target, "socket:") || strings.Contains(target, "tun") {
			t.Errorf("the root keeper holds %s -> %s", fd, target)
		}
	}

	if !holds(keeper, d.Pidfile) {
		t.Errorf("the keeper does not hold the pidfile %s (and its lock)", d.Pidfile)
	}

	// A root client and an unprivileged member of the socket group.
	a := d.connect(testMAC(1))
	gid, _ := strconv.Atoi(g.Gid)
	vm, err := relayClient(t, d.Sock, &syscall.Credential{Uid: vmOwnerUID, Gid: vmOwnerUID, Groups: []uint32{uint32(gid)}})
	if err != nil {
		t.Fatalf("an unprivileged member of group %s could not connect: %v", g.Name, err)
	}
	if !waitFor(5*time.Second, func() bool { return d.countLog("client connected") == 2 }) {
		t.Fatalf("the relayed client was not accepted; log:\n%s", d.Stderr())
	}
	a.send(rawFrame(testbed.Broadcast, a.mac, tagBroadcast, 1))
	expectTag(t, vm, tagBroadcast, 2*time.Second)
	if _, err := vm.Write(rawFrame(testbed.Broadcast, testMAC(2), tagUnicast, 1)); err != nil {
		t.Fatal(err)
	}
	a.expect(tagUnicast, 2*time.Second)

	// Someone outside the group is refused by the socket's mode, as before.
	if _, err := relayClient(t, d.Sock, &syscall.Credential{Uid: vmOwnerUID + 101, Gid: vmOwnerUID + 101}); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("a user outside group %s: %v; want socat refused with Permission denied", g.Name, err)
	}

	// The pidfile's lock, held by the keeper, still refuses a second daemon.
	other := filepath.Join(filepath.Dir(d.Sock), "other")
	_, err = tryStartDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Sock: other, Pidfile: d.Pidfile, Args: []string{"-U"}})
	var se *testbed.StartError
	if !errors.As(err, &se) || !strings.Contains(se.Stderr, "locked by a running vknetd") {
		t.Errorf("a second daemon on the pidfile of vknetd --user: %v; want refused as locked", err)
	}

	ctl := d.Sock + ".ctl"
	for _, p := range []string{d.Sock, ctl, d.Pidfile} {
		if !fileExists(p) {
			t.Fatalf("%s missing while the daemon runs", p)
		}
	}
	if code := d.stop(); code != 0 {
		t.Fatalf("vknetd --user exited with %d after SIGTERM; stderr:\n%s", code, d.Stderr())
	}
	for _, p := range []string{d.Sock, ctl, d.Pidfile} {
		if fileExists(p) {
			t.Errorf("%s is still there after SIGTERM", p)
		}
	}
	if show, ok := ns.LinkShow(d.TAP); ok {
		t.Errorf("the TAP vknetd created is still there after SIGTERM:\n%s", show)
	}
	if show, ok := ns.LinkShow("vkbr7"); ok {
		t.Errorf("the bridge vknetd created is still there after SIGTERM:\n%s", show)
	}
	if testbed.ProcessAlive(keeper) {
		t.Errorf("the keeper (pid %d) outlived the daemon", keeper)
	}
	if strings.Contains(d.Stderr(), "level=ERROR") {
		t.Errorf("errors in the log:\n%s", d.Stderr())
	}
}

// A daemon that cannot clean up (SIGKILL) still has its files removed:
// the keeper sees its pipe close.
func TestUserKeeperCleansUpAfterSIGKILL(t *testing.T) {
	needRoot(t)
	lookupDropUser(t)
	ns := testbed.NewNetns(t)
	d := startDroppingDaemon(t, ns, "root")
	ctl := d.Sock + ".ctl"
	d.signal(syscall.SIGKILL)
	d.exitCode(5 * time.Second)
	if !waitFor(5*time.Second, func() bool {
		return !fileExists(d.Sock) && !fileExists(ctl) && !fileExists(d.Pidfile)
	}) {
		t.Errorf("5s after SIGKILL: socket there %v, control socket there %v, pidfile there %v; want all removed by the keeper",
			fileExists(d.Sock), fileExists(ctl), fileExists(d.Pidfile))
	}
	if show, ok := ns.LinkShow(d.TAP); ok {
		t.Errorf("the TAP is still there after SIGKILL:\n%s", show)
	}
	// And the same paths serve a new daemon at once.
	startDaemon(t, ns, testbed.DaemonConfig{Sock: d.Sock, Pidfile: d.Pidfile, Args: []string{"-U", "--user", dropUser}})
}

// --user that cannot be honoured is refused before anything exists.
func TestUserRefusedBeforeAnythingIsCreated(t *testing.T) {
	needRoot(t)
	for _, c := range []struct{ user, want string }{
		{"vkt-no-such-user", "no such user"},
		{"root", "would not give up root"},
	} {
		dir := testbed.ShortTempDir(t)
		sock, pidfile := filepath.Join(dir, "vknet"), filepath.Join(dir, "vknetd.pid")
		ns := testbed.NewNetns(t)
		_, err := tryStartDaemon(t, ns, testbed.DaemonConfig{Sock: sock, Pidfile: pidfile, Args: []string{"-U", "--user", c.user}})
		var se *testbed.StartError
		if !errors.As(err, &se) {
			t.Fatalf("--user %s: vknetd started (or hung): %v", c.user, err)
		}
		if se.Code == 0 || !strings.Contains(se.Stderr, "--user "+c.user) || !strings.Contains(se.Stderr, c.want) {
			t.Errorf("--user %s: exit status %d, stderr %q; want non-zero and %q", c.user, se.Code, se.Stderr, c.want)
		}
		if fileExists(sock) || fileExists(pidfile) {
			t.Errorf("--user %s: the refused daemon left files behind", c.user)
		}
		if out := ns.Run(t, "ip", "-o", "link"); strings.Contains(out, "tap") {
			t.Errorf("--user %s: the refused daemon left a TAP:\n%s", c.user, out)
		}
	}
}
