package qemu_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
)

// TestGuestsKeepNetworkThroughUpgrades (issue 17): a QEMU guest on the
// stream listener without reconnect= (it never comes back by itself, as
// a vkernel or User Mode Linux does not) and a vhost-user guest keep
// their network through upgrades of the switch: the host pings both
// every 200 ms across five upgrades and loses no reply, and both keep
// their port (no reconnection).
func TestGuestsKeepNetworkThroughUpgrades(t *testing.T) {
	const (
		macV, ipV = "52:54:00:76:6b:41", "198.18.0.41"
		macS, ipS = "52:54:00:76:6b:42", "198.18.0.42"
	)
	l := newLab(t, map[string]string{macV: ipV, macS: ipS})
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
		p := l.ns.Start(t, "ping", "-n", "-i", "0.2", "-c", "40", "-W", "5", ip)
		pings[ip] = p
		defer p.Wait(15 * time.Second)
	}
	time.Sleep(time.Second)
	for i := 0; i < 5; i++ {
		c, err := control.Dial(ctl)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		pid, err := c.Upgrade("")
		c.Close()
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		t.Logf("upgrade %d: pid %d serves after %v", i+1, pid, time.Since(start).Round(time.Millisecond))
		time.Sleep(time.Second)
	}
	stats := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	for ip, p := range pings {
		var m []string
		for end := time.Now().Add(20 * time.Second); m == nil && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			m = stats.FindStringSubmatch(p.Output())
		}
		if m == nil {
			t.Fatalf("ping %s did not finish: %s", ip, p.Output())
		}
		sent, _ := strconv.Atoi(m[1])
		got, _ := strconv.Atoi(m[2])
		t.Logf("host to %s across 5 upgrades: %d pings, %d replies", ip, sent, got)
		if got != sent || sent == 0 {
			t.Errorf("host to %s across 5 upgrades: %d of %d pings answered", ip, got, sent)
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
