//go:build linux

package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
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

// TestSupervisorSurvivesKill: with --supervise, kill -9 of the daemon
// disconnects no SEQPACKET, stream, datagram or vhost-user client; traffic flows
// again within 2 s, through a new daemon with the same port ids and the
// MAC table and bindings it had; vknetctl stats counts the restart; a
// second kill at once backs off with one log line; and the last daemon
// still cleans up at SIGTERM.
func TestSupervisorSurvivesKill(t *testing.T) {
	needRoot(t)
	b := startBed(t, vknetd, allKinds, "--supervise")
	b.start()
	time.Sleep(1500 * time.Millisecond) // a snapshot of the tables has reached the supervisor
	before := b.snapshot()
	pid := readPid(t, b.pidfile)
	if pid == b.d.Pid() {
		t.Fatalf("the daemon is the supervisor (pid %d)", pid)
	}
	got := make([]uint64, len(b.flows))
	for i, f := range b.flows {
		got[i] = f.got.Load()
	}
	killed := time.Now()
	syscall.Kill(pid, syscall.SIGKILL)
	resumed := waitFor(2*time.Second, func() bool {
		for i, f := range b.flows {
			if f.got.Load() < got[i]+10 {
				return false
			}
		}
		return true
	})
	took := time.Since(killed)
	if !resumed {
		t.Fatalf("traffic did not resume within 2 s of kill -9")
	}
	t.Logf("traffic resumed %v after kill -9", took.Round(time.Millisecond))
	var newPid int
	if !waitFor(2*time.Second, func() bool { newPid = tryReadPid(b.pidfile); return newPid != pid && newPid > 0 && pidAlive(newPid) }) {
		t.Fatalf("pidfile names %d after the restart (killed %d)", newPid, pid)
	}
	after := b.snapshot()
	// Counters are the snapshot's (up to a second old) plus what came
	// since: compare the ports, MACs and bindings only.
	for id := range before.ports {
		before.ports[id] = control.Port{ID: id, Kind: before.ports[id].Kind, Name: before.ports[id].Name, PID: before.ports[id].PID, UID: before.ports[id].UID}
	}
	sameView(t, "restart after kill -9", before, after, false)
	c, err := control.Dial(b.ctl)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats()
	c.Close()
	if err != nil || st.Restarts != 1 {
		t.Errorf("vknetctl stats: restarts %d (%v), want 1", st.Restarts, err)
	}
	// Dying again at once is a crash loop: a back-off, said once.
	for i, f := range b.flows {
		got[i] = f.got.Load()
	}
	syscall.Kill(newPid, syscall.SIGKILL)
	if !waitFor(3*time.Second, func() bool {
		for i, f := range b.flows {
			if f.got.Load() < got[i]+10 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("traffic did not resume after the second kill -9")
	}
	if n := strings.Count(b.d.Stderr(), "keeps dying soon after its start"); n != 1 {
		t.Errorf("%d back-off lines after a daemon died within 10 s of its restart, want 1", n)
	}
	if !waitFor(2*time.Second, func() bool { newPid = tryReadPid(b.pidfile); return pidAlive(newPid) }) {
		t.Fatal("no daemon after the second restart")
	}
	if c, err := control.Dial(b.ctl); err == nil {
		st, err := c.Stats()
		c.Close()
		if err != nil || st.Restarts != 2 {
			t.Errorf("vknetctl stats after two crashes: restarts %d (%v), want 2", st.Restarts, err)
		}
	}
	b.quiesce()
	b.checkFlows()
	for _, f := range b.flows {
		sent, rcvd := f.sent.Load(), f.got.Load()
		t.Logf("%s flow: %d sent, %d received across the kill (%d lost)", f.kind, sent, rcvd, sent-rcvd)
	}
	stopAndCheckCleanup(t, b, newPid)
	if err := b.d.Wait(5 * time.Second); err != nil {
		t.Errorf("the supervisor did not exit after the daemon stopped: %v", err)
	}
}

// TestSupervisorUnderUserAfterUpgrade: under --user, an upgraded daemon
// is still supervised: kill -9 of it is survived the same way, the new
// daemon is the user with CAP_NET_ADMIN alone, and the keeper still
// cleans up at the end.
func TestSupervisorUnderUserAfterUpgrade(t *testing.T) {
	needRoot(t)
	lookupDropUser(t)
	binDir := testbed.ShortTempDir(t)
	os.Chmod(binDir, 0o755)
	bin := filepath.Join(binDir, "vknetd")
	copyFile(t, vknetd, bin, 0o755)
	b := startBed(t, bin, allKinds, "--supervise", "--user", dropUser)
	b.start()
	time.Sleep(300 * time.Millisecond)
	if _, err := b.upgrade(""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	pid := readPid(t, b.pidfile)
	got := make([]uint64, len(b.flows))
	for i, f := range b.flows {
		got[i] = f.got.Load()
	}
	syscall.Kill(pid, syscall.SIGKILL)
	if !waitFor(2*time.Second, func() bool {
		for i, f := range b.flows {
			if f.got.Load() < got[i]+10 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("traffic did not resume within 2 s of kill -9 of the upgraded daemon")
	}
	// Under --user the keeper writes the pidfile, a moment later.
	var newPid int
	if !waitFor(2*time.Second, func() bool { newPid = tryReadPid(b.pidfile); return newPid != pid && newPid > 0 && pidAlive(newPid) }) {
		t.Fatalf("pidfile names %d after the restart (killed %d)", newPid, pid)
	}
	st := procStatus(t, fmt.Sprintf("/proc/%d/status", newPid))
	if uids := strings.Fields(st["Uid"]); len(uids) != 4 || uids[0] == "0" || uids[1] == "0" || st["CapEff"] != "0000000000001000" ||
		st["CapInh"] != "0000000000000000" || st["CapAmb"] != "0000000000000000" {
		t.Errorf("the restarted daemon: uids %q, capabilities eff %s inh %s amb %s; want the user with CAP_NET_ADMIN alone",
			st["Uid"], st["CapEff"], st["CapInh"], st["CapAmb"])
	}
	b.quiesce()
	b.checkFlows()
	stopAndCheckCleanup(t, b, newPid)
}

func tryReadPid(path string) int {
	b, _ := os.ReadFile(path)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pidfile %s: %q", path, b)
	}
	return pid
}

// TestSupervisorKeepsVhostUserGuests: kill -9 under --supervise while Go
// vhost-user guests that never reconnect send without pause. The new
// daemon takes them up from what the supervisor held, each ring resumed
// from guest memory: traffic flows again within 2 s, the ports keep their
// ids, no client connects anew, the guests' sockets never close, secure
// mode holds, and an upgrade after it hands them on. Before, the guests'
// sockets closed with the daemon and, not reconnecting, they never had
// traffic again.
func TestSupervisorKeepsVhostUserGuests(t *testing.T) {
	needRoot(t)
	b := startBed(t, vknetd, []string{"vhost-user"}, "--supervise")
	b.start()
	time.Sleep(1500 * time.Millisecond) // a snapshot of the tables has reached the supervisor
	before := b.snapshot()
	statsBefore := daemonStats(t, b)
	var socks []int
	for _, f := range b.flows {
		for _, end := range []flowEnd{f.tx, f.rx} {
			socks = append(socks, end.(*vhostEnd).g.SocketFD())
		}
	}
	pid := readPid(t, b.pidfile)
	// The supervisor holds the guests' memory files and never maps them;
	// the daemon does.
	maps := func(pid int) string { m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid)); return string(m) }
	if !strings.Contains(maps(pid), "memfd:vhostguest") || strings.Contains(maps(b.d.Pid()), "memfd:vhostguest") {
		t.Errorf("guest memory mapped by the daemon %v, by the supervisor %v; want the daemon alone",
			strings.Contains(maps(pid), "memfd:vhostguest"), strings.Contains(maps(b.d.Pid()), "memfd:vhostguest"))
	}
	f := b.flows[0]
	got := f.got.Load()
	killed := time.Now()
	syscall.Kill(pid, syscall.SIGKILL)
	if !waitFor(2*time.Second, func() bool { return f.got.Load() >= got+10 }) {
		t.Fatalf("vhost-user traffic did not resume within 2 s of kill -9 (%d frames received since)", f.got.Load()-got)
	}
	t.Logf("vhost-user traffic resumed %v after kill -9", time.Since(killed).Round(time.Millisecond))
	var newPid int
	if !waitFor(2*time.Second, func() bool { newPid = tryReadPid(b.pidfile); return newPid != pid && newPid > 0 && pidAlive(newPid) }) {
		t.Fatalf("pidfile names %d after the restart (killed %d)", newPid, pid)
	}
	after := b.snapshot()
	for id := range before.ports {
		before.ports[id] = control.Port{ID: id, Kind: before.ports[id].Kind, Name: before.ports[id].Name, PID: before.ports[id].PID, UID: before.ports[id].UID}
	}
	sameView(t, "restart after kill -9", before, after, false)
	st := daemonStats(t, b)
	if st.Restarts != 1 || st.Accepted != statsBefore.Accepted || st.ClientsByKind["vhost-user"] != 2 {
		t.Errorf("after kill -9: restarts %d, %d clients accepted (before %d), %d vhost-user clients; want 1 restart, no new client, 2 guests",
			st.Restarts, st.Accepted, statsBefore.Accepted, st.ClientsByKind["vhost-user"])
	}
	// The devices taken up after the crash are whole: an upgrade hands
	// them on like any other.
	upgraded, err := b.upgrade("")
	if err != nil {
		t.Fatalf("upgrade after the crash: %v", err)
	}
	newPid = upgraded
	got = f.got.Load()
	if !waitFor(2*time.Second, func() bool { return f.got.Load() >= got+10 }) {
		t.Fatal("no vhost-user traffic after an upgrade that followed the crash")
	}
	b.quiesce()
	b.checkFlows()
	// The guests' side: the same sockets, never hung up.
	i := 0
	for _, f := range b.flows {
		for _, end := range []flowEnd{f.tx, f.rx} {
			fd := end.(*vhostEnd).g.SocketFD()
			if fd != socks[i] || socketClosedByPeer(fd) {
				t.Errorf("%s guest %d: socket %d (before %d), closed by the daemon: %v", f.kind, i, fd, socks[i], socketClosedByPeer(fd))
			}
			i++
		}
	}
	t.Logf("vhost-user flow: %d sent, %d received across the kill (%d lost)", f.sent.Load(), f.got.Load(), f.sent.Load()-f.got.Load())
	// Secure mode after the restart: both guests' addresses are still
	// bound (the view above compared them), and the sender cannot take
	// the receiver's. The sender's goroutine has stopped: the test may
	// use its guest.
	if len(before.bindings) < 2 {
		t.Errorf("bindings before the kill: %v, want both guests'", before.bindings)
	}
	dropped := func() (n uint64) {
		for _, p := range b.snapshot().ports {
			for _, c := range p.Drops {
				n += c
			}
		}
		return n
	}
	droppedBefore := dropped()
	got = f.got.Load()
	payload := binary.BigEndian.AppendUint64(make([]byte, 56, 64), f.sent.Load()+1000)
	spoof := testbed.IPv4UDP(f.txMAC, f.rxMAC, f.rxIP, f.rxIP, 4000, 4000, payload)
	if err := f.tx.send(spoof); err != nil {
		t.Fatal(err)
	}
	if !waitFor(2*time.Second, func() bool { return dropped() > droppedBefore }) {
		t.Errorf("a frame from %s with the other guest's bound address %s was not dropped after the restart", net.HardwareAddr(f.txMAC[:]), f.rxIP)
	}
	if f.got.Load() != got {
		t.Errorf("the receiver got a frame sent with its own bound address by the other guest after the restart")
	}
	stopAndCheckCleanup(t, b, newPid)
	if err := b.d.Wait(5 * time.Second); err != nil {
		t.Errorf("the supervisor did not exit after the daemon stopped: %v", err)
	}
}

func daemonStats(t *testing.T, b *upgradeBed) control.Stats {
	t.Helper()
	c, err := control.Dial(b.ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// socketClosedByPeer says the other end of the connected socket fd shut
// down or closed, without reading from it.
func socketClosedByPeer(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(pfd, 0)
	return err == nil && n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0
}

// TestSupervisorRestartsTheUpgradedBinary: after vknetctl upgrade to a
// binary at another path, kill -9 under --supervise starts that binary,
// not the one the supervisor was started from (which would roll the
// upgrade back), and the clients, vhost-user guests included, are taken
// up. Deleted from disk, the upgraded binary is still what the next
// crash starts. Before, the supervisor restarted its own executable.
func TestSupervisorRestartsTheUpgradedBinary(t *testing.T) {
	needRoot(t)
	binDir := testbed.ShortTempDir(t)
	os.Chmod(binDir, 0o755)
	upgraded := filepath.Join(binDir, "vknetd-upgraded")
	copyFile(t, vknetd, upgraded, 0o755)
	var want unix.Stat_t
	if err := unix.Stat(upgraded, &want); err != nil {
		t.Fatal(err)
	}
	b := startBed(t, vknetd, []string{"seqpacket", "vhost-user"}, "--supervise")
	b.start()
	if _, err := b.upgrade(upgraded); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the new daemon's notices and a snapshot have reached the supervisor
	statsBefore := daemonStats(t, b)
	pid := readPid(t, b.pidfile)
	killAndCheck := func(round int, wantExe string) int {
		t.Helper()
		got := make([]uint64, len(b.flows))
		for i, f := range b.flows {
			got[i] = f.got.Load()
		}
		syscall.Kill(pid, syscall.SIGKILL)
		if !waitFor(3*time.Second, func() bool {
			for i, f := range b.flows {
				if f.got.Load() < got[i]+10 {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("kill -9 %d: traffic did not resume within 3 s", round)
		}
		var newPid int
		if !waitFor(2*time.Second, func() bool { newPid = tryReadPid(b.pidfile); return newPid != pid && newPid > 0 && pidAlive(newPid) }) {
			t.Fatalf("kill -9 %d: pidfile names %d (killed %d)", round, newPid, pid)
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", newPid))
		var st unix.Stat_t
		unix.Stat(fmt.Sprintf("/proc/%d/exe", newPid), &st)
		if exe != wantExe || st.Ino != want.Ino || st.Dev != want.Dev {
			t.Errorf("kill -9 %d: the restarted daemon runs %q (inode %d), want %q (inode %d): the upgrade was rolled back", round, exe, st.Ino, wantExe, want.Ino)
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", newPid)); strings.TrimSpace(string(comm)) != "vknetd-upgraded" {
			t.Errorf("kill -9 %d: the restarted daemon is named %q, want its executable's name", round, comm)
		}
		st2 := daemonStats(t, b)
		if st2.Restarts != uint64(round) || st2.Accepted != statsBefore.Accepted || st2.ClientsByKind["vhost-user"] != 2 || st2.ClientsByKind["seqpacket"] != 2 {
			t.Errorf("kill -9 %d: restarts %d, %d clients accepted (before %d), clients %v; want no client accepted anew, 2 guests and 2 SEQPACKET clients",
				round, st2.Restarts, st2.Accepted, statsBefore.Accepted, st2.ClientsByKind)
		}
		return newPid
	}
	pid = killAndCheck(1, upgraded)
	// Gone from disk: the supervisor still holds it.
	if err := os.Remove(upgraded); err != nil {
		t.Fatal(err)
	}
	pid = killAndCheck(2, upgraded+" (deleted)")
	b.quiesce()
	b.checkFlows()
	stopAndCheckCleanup(t, b, pid)
	if err := b.d.Wait(5 * time.Second); err != nil {
		t.Errorf("the supervisor did not exit after the daemon stopped: %v", err)
	}
}
