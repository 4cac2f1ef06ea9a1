//go:build linux

package integration

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

func TestDaemonSurvivesRunningOutOfFds(t *testing.T) {
	needRoot(t)
	// The daemon refuses to start under a limit that cannot hold its
	// --max-clients, so it starts under an ample one and the limit is cut
	// under its feet, as an fd leak or a prlimit by hand would: 20
	// descriptors leave room for about eight clients next to the daemon's
	// own (stdio, pidfile, epoll, eventfds, TAP, netlink, sockets). The
	// back-off is the daemon's defence when the budget is wrong after all.
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Args: []string{"-U", "--max-clients", "64", "--user-clients", "64"}})
	if out, err := exec.Command("prlimit", "--pid", strconv.Itoa(d.Pid()), "--nofile=20:20").CombinedOutput(); err != nil {
		t.Fatalf("prlimit --pid %d --nofile=20:20: %v\n%s", d.Pid(), err, out)
	}

	// The kernel completes these connections into the listen backlog
	// whether or not the daemon can accept them.
	const n = 30
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialRaw(t, d.Sock, testMAC(byte(10+i)))
	}
	failed := d.waitLog(5*time.Second, "accept failed, pausing new connections")
	if !strings.Contains(failed["err"], "too many open files") {
		t.Errorf("accept failed for %q, want EMFILE (too many open files): %v", failed["err"], failed)
	}
	// With several loops a client's "connected" line comes from the loop
	// it was given to, which may write it after the accepting loop's
	// failure: wait for the first two.
	waitFor(5*time.Second, func() bool { return d.countLog("client connected") >= 2 })
	accepted := d.countLog("client connected")
	if accepted < 2 || accepted >= n {
		t.Fatalf("%d of %d clients accepted under a 20-fd limit; the test needs at least 2 and fewer than all", accepted, n)
	}
	d.requireRunning()

	// Unix sockets are accepted in connection order: the first ones are
	// connected ports. Keep two, close the rest, accepted or waiting.
	keep := clients[:2]
	i := 0
	for _, r := range d.Log() {
		if r["msg"] == "client connected" && i < len(keep) {
			keep[i].port, _ = strconv.Atoi(r["port"])
			i++
		}
	}
	for _, c := range clients[2:] {
		c.Close()
	}
	// Every waiting connection is accepted in turn and found closed.
	if !waitFor(15*time.Second, func() bool {
		return d.countLog("client connected") == n && d.departed() == n-2
	}) {
		t.Fatalf("after closing %d clients the daemon accepted %d and saw %d leave, want %d and %d; log:\n%s",
			n-2, d.countLog("client connected"), d.departed(), n, n-2, d.Stderr())
	}
	d.waitLog(5*time.Second, "accepting connections again")

	fresh := d.connect(testMAC(99))
	fresh.send(rawFrame(testbed.Broadcast, fresh.mac, tagBroadcast, 1))
	for _, c := range keep {
		if seq := c.expect(tagBroadcast, 2*time.Second); seq != 1 {
			t.Fatalf("a kept client got broadcast %d, want 1", seq)
		}
	}
	keep[0].send(rawFrame(fresh.mac, keep[0].mac, tagUnicast, 2))
	if seq := fresh.expect(tagUnicast, 2*time.Second); seq != 2 {
		t.Fatalf("the new client got unicast %d, want 2", seq)
	}
	d.requireRunning()
	if code := d.stop(); code != 0 {
		t.Errorf("vknetd exited with %d after SIGTERM; log:\n%s", code, d.Stderr())
	}
}
