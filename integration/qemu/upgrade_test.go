package qemu_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
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

// TestGuestsKeepNetworkThroughUpgrades (issue 17): a QEMU guest on the
// stream listener without reconnect= (it never comes back by itself, as
// a vkernel or User Mode Linux does not) and a vhost-user guest keep
// their network through upgradesInARow upgrades of the switch in a row:
// each guest pings the host every 20 ms and the host pings each guest
// every 200 ms across them; the switch drops nothing, none of the host's
// pings and at most 0.1% of the guests' go unanswered (more only after a
// pause long enough to overflow busybox ping's buffer, see burstPause),
// and both guests keep their port (no reconnection). The longest round trip a guest saw, its longest pause,
// is logged: issue 17's target is 200 ms, which a loaded machine running
// TCG guests cannot promise, so it is measured, not asserted.
func TestGuestsKeepNetworkThroughUpgrades(t *testing.T) {
	const (
		macV, ipV = "52:54:00:76:6b:41", "198.18.0.41"
		macS, ipS = "52:54:00:76:6b:42", "198.18.0.42"
	)
	l := newLab(t, map[string]string{macV: ipV, macS: ipS})
	l.initrd = layerInitrd(t, l.dir, "initrd-stream", "vkt-stream", streamInit)
	stream := fmt.Sprintf("vkt.stream=%s,%d", hostIP, streamPings)
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
	ctl := l.daemon.Sock + ".ctl"
	ports := func() map[string]control.Port {
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
		return out
	}
	before := ports()
	pings := map[string]interface{ Output() string }{}
	for _, ip := range []string{ipV, ipS} {
		p := l.ns.Start(t, "ping", "-n", "-i", "0.2", "-c", "75", "-W", "5", ip)
		pings[ip] = p
		defer p.Wait(30 * time.Second)
	}
	time.Sleep(time.Second)
	var costs []time.Duration
	for i := 0; i < upgradesInARow; i++ {
		c, err := control.Dial(ctl)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.Upgrade("")
		c.Close()
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		costs = append(costs, time.Since(start))
		time.Sleep(upgradeSpacing)
	}
	slices.Sort(costs)
	t.Logf("%d upgrades: vknetctl upgrade took %v to %v (median %v)", len(costs),
		costs[0].Round(time.Millisecond), costs[len(costs)-1].Round(time.Millisecond), costs[len(costs)/2].Round(time.Millisecond))
	for kind, g := range guests {
		if strings.Contains(g.p.Output(), "VKT-STREAM ") {
			t.Errorf("the %s guest's ping stream ended before the last upgrade: raise streamPings", kind)
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
		t.Logf("host to %s every 200 ms across %d upgrades: %d pings, %d replies", ip, upgradesInARow, sent, got)
		if got != sent || sent == 0 {
			t.Errorf("host to %s across %d upgrades: %d of %d pings answered", ip, upgradesInARow, got, sent)
		}
	}
	for kind, g := range guests {
		var m []string
		// 1000 pings 20 ms apart, slower when TCG falls behind.
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
		t.Logf("%s guest to the host every 20 ms across %d upgrades: %d pings, %d replies, longest round trip (its longest pause) %.1f ms",
			kind, upgradesInARow, sent, got, longest)
		switch {
		case sent != streamPings:
			t.Errorf("%s guest: %d pings sent, want %d", kind, sent, streamPings)
		case sent-got <= sent/1000:
		case longest >= burstPause:
			// The switch's counters below say whether it lost them.
			t.Logf("%s guest: %d pings unanswered after a pause of %.0f ms: busybox ping's receive buffer (about 7 KB) holds a few of the replies that then arrive at once", kind, sent-got, longest)
		default:
			t.Errorf("%s guest to the host across %d upgrades: %d of %d pings answered, want all but 0.1%%", kind, upgradesInARow, got, sent)
		}
	}
	// Nothing dropped anywhere: what the guests sent reached the host and
	// back, whatever a guest's ping could take in.
	if c, err := control.Dial(ctl); err != nil {
		t.Error(err)
	} else {
		st, err := c.Stats()
		c.Close()
		if err != nil || len(st.Drops) != 0 {
			t.Errorf("the switch dropped frames across the upgrades: %v (%v)", st.Drops, err)
		}
	}
	after := ports()
	for kind, p := range before {
		if q := after[kind]; q.ID != p.ID || q.PID != p.PID {
			t.Errorf("the %s guest's port is %d (pid %d) after the upgrades, %d (pid %d) before: it reconnected", kind, q.ID, q.PID, p.ID, p.PID)
		}
	}
	gv.stop(t)
	gs.stop(t)
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
	if pid <= 0 || pid == l.daemon.Pid() {
		t.Fatalf("pidfile %q: not the supervised daemon", b)
	}
	ctl := l.daemon.Sock + ".ctl"
	before, acceptedBefore := guestPorts(t, ctl)
	syscall.Kill(pid, syscall.SIGKILL)
	killed := time.Now()
	for _, ip := range []string{ipS, ipV} {
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
