package qemu_test

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
)

// upgradesInARow is how many upgrades TestGuestsKeepNetworkThroughUpgrades
// runs, as issue 17 asks; upgradeSpacing is the time between two.
const (
	upgradesInARow = 20
	upgradeSpacing = 250 * time.Millisecond
)

// The guests' side of the upgrades: each guest pings the host every 20 ms
// (streamPings times, 20 s when the guest's clock keeps pace) while the
// switch is upgraded, and prints busybox's summary. Its round-trip maximum
// is the longest pause the guest saw: a request sent when the old daemon
// stops reading waits in the socket or the ring until the new one reads
// it. With -c, ping waits up to -W 5 s for the replies still due after its
// last request, so none is counted lost for want of time.
const (
	streamPings = 1000
	streamInit  = `#!/bin/sh
# The test guest's /init (scripts/qemu-guest.sh) with a ping stream beside
# it: vkt.stream=IP,COUNT pings IP every 20 ms, COUNT times, from the lease
# on, and prints the summary as one VKT-STREAM line. A job in the
# background reads /dev/null: /dev is mounted first (and again by /init).
/bin/mount -t devtmpfs devtmpfs /dev
(
	while [ ! -s /run/lease ]; do /bin/sleep 0.1; done
	for w in $(/bin/cat /proc/cmdline); do
		case $w in vkt.stream=*) spec=${w#*=} ;; esac
	done
	echo VKT-STREAM-START
	out=$(/bin/ping -q -i 0.02 -c "${spec#*,}" -W 5 "${spec%,*}" 2>&1)
	echo VKT-STREAM $out
) &
exec /init
`
)

// burstPause is the pause after which a guest's ping may lose replies of
// its own: the ones sent during the pause come back at once, and busybox's
// ping reads them through a socket buffer of about 7 KB. A 300 ms pause
// injected in every upgrade lost 7% of them so, with every frame
// delivered by the switch.
const burstPause = 100

// streamReport is a guest's VKT-STREAM line.
var streamReport = regexp.MustCompile(`VKT-STREAM .*?(\d+) packets transmitted, (\d+) packets received.*round-trip min/avg/max = [0-9.]+/[0-9.]+/([0-9.]+) ms`)

// keepCase is one run of guestsKeepNetwork: how the switch runs, and
// what is done to it while its guests ping.
type keepCase struct {
	name string
	// daemonArgs go on vknetd's command line.
	daemonArgs []string
	upgrades   int
	// kill: after the upgrades, kill -9 the last daemon (daemonArgs
	// hold --supervise).
	kill bool
	// guestPings is the length of each guest's ping stream, 20 ms apart,
	// which must outlast the upgrades and the kill; hostPings that of the
	// host's to each guest, 200 ms apart.
	guestPings, hostPings int
}

// dropUser is the user that --user cases run the switch as, as in
// integration/.
const dropUser = "nobody"

// TestGuestsKeepNetworkThroughUpgrades (issue 17): a QEMU guest on the
// stream listener without reconnect= (it never comes back by itself, as
// a vkernel or User Mode Linux does not) and a vhost-user guest keep
// their network through upgrades of the switch in a row: each guest
// pings the host every 20 ms and the host pings each guest every 200 ms
// across them; the switch drops nothing, none of the host's pings and at
// most 0.1% of the guests' go unanswered (more only after a pause long
// enough to overflow busybox ping's buffer, see burstPause), both guests
// keep their port and no client is accepted anew (no reconnection). The
// longest round trip a guest saw, its longest pause, is logged: issue
// 17's target is 200 ms, which a loaded machine running TCG guests
// cannot promise, so it is measured, not asserted.
//
// root: upgradesInARow upgrades of a daemon run as root. user: under
// --supervise --user, a few upgrades (each new daemon never root), then
// kill -9 of the last daemon, after which the host's pings are answered
// again within 2 s.
func TestGuestsKeepNetworkThroughUpgrades(t *testing.T) {
	for _, c := range []keepCase{
		{name: "root", upgrades: upgradesInARow, guestPings: 1000, hostPings: 75},
		// A few upgrades show the handover as the user; the supervisor
		// then adopts the clients from the fds it holds.
		{name: "user", daemonArgs: []string{"--supervise", "--user", dropUser}, upgrades: 3, kill: true, guestPings: 600, hostPings: 40},
	} {
		t.Run(c.name, func(t *testing.T) { guestsKeepNetwork(t, c) })
	}
}

func guestsKeepNetwork(t *testing.T, c keepCase) {
	const (
		macV, ipV = "52:54:00:76:6b:41", "198.18.0.41"
		macS, ipS = "52:54:00:76:6b:42", "198.18.0.42"
	)
	o := labOptions{fixed: map[string]string{macV: ipV, macS: ipS}, daemonArgs: c.daemonArgs}
	underUser := slices.Contains(c.daemonArgs, "--user")
	if underUser {
		o.binary = binaryForUser(t)
	}
	l := newLabWith(t, o)
	l.initrd = layerInitrd(t, l.dir, "initrd-stream", "vkt-stream", streamInit)
	stream := fmt.Sprintf("vkt.stream=%s,%d", hostIP, c.guestPings)
	gv := l.boot(t, "v", macV, overVhostUser, "rdinit=/vkt-stream", stream, "vkt.ping="+hostIP, hold())
	gs := l.boot(t, "s", macS, overStream, "rdinit=/vkt-stream", stream, "vkt.ping="+hostIP, hold())
	deadline := time.Now().Add(guestTimeout)
	rv, errV := gv.wait(deadline)
	rs, errS := gs.wait(deadline)
	gv.check(t, rv, errV, ipV, hostIP)
	gs.check(t, rs, errS, ipS, hostIP)
	if t.Failed() {
		return
	}
	guests := map[string]*guest{"vhost-user": gv, "stream": gs}
	for _, g := range guests {
		// It starts at the lease, beside /init's own ping: usually before
		// VKT-DONE, not always.
		waitUntil(t, 30*time.Second, "guest "+g.name+"'s ping stream", g.p, func() bool {
			return strings.Contains(g.p.Output(), "VKT-STREAM-START")
		})
	}
	checkWorkers(t, l, 2)
	ctl := l.daemon.Sock + ".ctl"
	before, acceptedBefore := guestPorts(t, ctl)
	pings := map[string]interface{ Output() string }{}
	for _, ip := range []string{ipV, ipS} {
		p := l.ns.Start(t, "ping", "-n", "-i", "0.2", "-c", strconv.Itoa(c.hostPings), "-W", "5", ip)
		pings[ip] = p
		defer p.Wait(30 * time.Second)
	}
	time.Sleep(time.Second)
	var costs []time.Duration
	pid := 0
	for i := 0; i < c.upgrades; i++ {
		ctlc, err := control.Dial(ctl)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		pid, err = ctlc.Upgrade("")
		ctlc.Close()
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		costs = append(costs, time.Since(start))
		if underUser {
			if uid := procUid(t, pid); uid == "0" {
				t.Errorf("upgrade %d: the new daemon (pid %d) runs as root under --user", i+1, pid)
			}
		}
		time.Sleep(upgradeSpacing)
	}
	slices.Sort(costs)
	t.Logf("%d upgrades: vknetctl upgrade took %v to %v (median %v)", len(costs),
		costs[0].Round(time.Millisecond), costs[len(costs)-1].Round(time.Millisecond), costs[len(costs)/2].Round(time.Millisecond))
	events := fmt.Sprintf("%d upgrades", c.upgrades)
	if c.kill {
		// The keeper writes the pidfile under --user, a moment after the
		// upgrade: it names the daemon the supervisor restarts from.
		waitUntil(t, 5*time.Second, "the pidfile to name the upgraded daemon", l.daemon.Proc, func() bool {
			b, _ := os.ReadFile(l.daemon.Pidfile)
			return strings.TrimSpace(string(b)) == strconv.Itoa(pid)
		})
		killAndWaitForGuests(t, l, pid, ipS, ipV)
		events += " and kill -9"
	}
	for kind, g := range guests {
		if strings.Contains(g.p.Output(), "VKT-STREAM ") {
			t.Errorf("the %s guest's ping stream ended before the last of %s: raise guestPings", kind, events)
		}
	}
	stats := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	for ip, p := range pings {
		var m []string
		for end := time.Now().Add(30 * time.Second); m == nil && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			m = stats.FindStringSubmatch(p.Output())
		}
		if m == nil {
			t.Fatalf("ping %s did not finish: %s", ip, p.Output())
		}
		sent, _ := strconv.Atoi(m[1])
		got, _ := strconv.Atoi(m[2])
		t.Logf("host to %s every 200 ms across %s: %d pings, %d replies", ip, events, sent, got)
		if got != sent || sent == 0 {
			t.Errorf("host to %s across %s: %d of %d pings answered", ip, events, got, sent)
		}
	}
	for kind, g := range guests {
		var m []string
		// The stream's pings 20 ms apart, slower when TCG falls behind.
		for end := time.Now().Add(90 * time.Second); m == nil && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			out := g.p.Output()
			m = streamReport.FindStringSubmatch(out[:strings.LastIndexByte(out, '\n')+1])
		}
		if m == nil {
			t.Errorf("the %s guest printed no ping stream summary:\n%s", kind, g.p.Output())
			continue
		}
		sent, _ := strconv.Atoi(m[1])
		got, _ := strconv.Atoi(m[2])
		longest, _ := strconv.ParseFloat(m[3], 64)
		t.Logf("%s guest to the host every 20 ms across %s: %d pings, %d replies, longest round trip (its longest pause) %.1f ms",
			kind, events, sent, got, longest)
		switch {
		case sent != c.guestPings:
			t.Errorf("%s guest: %d pings sent, want %d", kind, sent, c.guestPings)
		case sent-got <= sent/1000:
		case longest >= burstPause:
			// The switch's counters below say whether it lost them.
			t.Logf("%s guest: %d pings unanswered after a pause of %.0f ms: busybox ping's receive buffer (about 7 KB) holds a few of the replies that then arrive at once", kind, sent-got, longest)
		default:
			t.Errorf("%s guest to the host across %s: %d of %d pings answered, want all but 0.1%%", kind, events, got, sent)
		}
	}
	// Nothing dropped anywhere: what the guests sent reached the host and
	// back, whatever a guest's ping could take in.
	if ctlc, err := control.Dial(ctl); err != nil {
		t.Error(err)
	} else {
		st, err := ctlc.Stats()
		ctlc.Close()
		if err != nil || len(st.Drops) != 0 {
			t.Errorf("the switch dropped frames across %s: %v (%v)", events, st.Drops, err)
		}
	}
	after, acceptedAfter := guestPorts(t, ctl)
	for kind, p := range before {
		if q := after[kind]; q.ID != p.ID || q.PID != p.PID {
			t.Errorf("the %s guest's port is %d (pid %d) after %s, %d (pid %d) before: it reconnected", kind, q.ID, q.PID, events, p.ID, p.PID)
		}
	}
	if acceptedAfter != acceptedBefore {
		t.Errorf("%d clients accepted after %s, %d before: a guest reconnected", acceptedAfter, events, acceptedBefore)
	}
	gv.stop(t)
	gs.stop(t)
}

// binaryForUser is a copy of vknetd that dropUser can run: an upgrade
// under --user starts the binary as the user, who cannot reach the one
// built in root's 0700 directory.
func binaryForUser(t *testing.T) string {
	t.Helper()
	if _, err := user.Lookup(dropUser); err != nil {
		t.Skipf("no user %s on this machine: %v", dropUser, err)
	}
	dir := testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(vknetd)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "vknetd")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// procUid is the real uid of process pid.
func procUid(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("the daemon (pid %d): %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return f[0]
			}
		}
	}
	t.Fatalf("/proc/%d/status has no Uid line", pid)
	return ""
}

// killAndWaitForGuests kills the supervised daemon pid with SIGKILL and
// fails t unless the host's pings to each of ips are answered within
// 2 s of it.
func killAndWaitForGuests(t *testing.T, l *lab, pid int, ips ...string) {
	t.Helper()
	if pid <= 0 || pid == l.daemon.Pid() {
		t.Fatalf("pid %d: not the supervised daemon", pid)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	killed := time.Now()
	for _, ip := range ips {
		for {
			if ok, _ := l.ns.Ping(t, ip, 1); ok {
				t.Logf("%s answers %v after kill -9", ip, time.Since(killed).Round(time.Millisecond))
				break
			}
			if time.Since(killed) > 2*time.Second {
				t.Fatalf("%s did not answer within 2 s of kill -9", ip)
			}
		}
	}
}

// TestGuestsKeepNetworkThroughKill: under --supervise a kill -9 of the
// daemon leaves a stream guest without reconnect= and a vhost-user guest
// connected: the host's pings are answered again within 2 s, both keep
// their port, and QEMU does not reconnect (no client is accepted anew):
// the new daemon took the vhost-user device up from what the supervisor
// held, its rings resumed from guest memory.
func TestGuestsKeepNetworkThroughKill(t *testing.T) {
	const (
		macV, ipV = "52:54:00:76:6b:51", "198.18.0.51"
		macS, ipS = "52:54:00:76:6b:52", "198.18.0.52"
	)
	l := newLabWith(t, labOptions{fixed: map[string]string{macV: ipV, macS: ipS}, daemonArgs: []string{"--supervise"}})
	gv := l.boot(t, "v", macV, overVhostUser, "vkt.ping="+hostIP, hold())
	gs := l.boot(t, "s", macS, overStream, "vkt.ping="+hostIP, hold())
	deadline := time.Now().Add(guestTimeout)
	rv, errV := gv.wait(deadline)
	rs, errS := gs.wait(deadline)
	gv.check(t, rv, errV, ipV, hostIP)
	gs.check(t, rs, errS, ipS, hostIP)
	if t.Failed() {
		return
	}
	b, err := os.ReadFile(l.daemon.Pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	checkWorkers(t, l, 2)
	ctl := l.daemon.Sock + ".ctl"
	before, acceptedBefore := guestPorts(t, ctl)
	killAndWaitForGuests(t, l, pid, ipS, ipV)
	after, acceptedAfter := guestPorts(t, ctl)
	for kind, p := range before {
		if q := after[kind]; q.ID != p.ID || q.PID != p.PID {
			t.Errorf("the %s guest's port is %d (pid %d) after kill -9, %d (pid %d) before: it reconnected", kind, q.ID, q.PID, p.ID, p.PID)
		}
	}
	if acceptedAfter != acceptedBefore {
		t.Errorf("%d clients accepted after kill -9, %d before: a guest reconnected", acceptedAfter, acceptedBefore)
	}
	gv.stop(t)
	gs.stop(t)
}

// guestPorts lists the vhost-user and stream guests' ports by kind, and
// how many clients the daemon has accepted since it (or the first of
// the daemons before it) started.
func guestPorts(t *testing.T, ctl string) (map[string]control.Port, uint64) {
	t.Helper()
	c, err := control.Dial(ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ps, err := c.Ports()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]control.Port{}
	for _, p := range ps {
		if p.Kind == "vhost-user" || p.Kind == "stream" {
			out[p.Kind] = p
		}
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return out, st.Accepted
}
