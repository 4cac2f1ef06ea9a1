//go:build linux

package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

func TestDaemonSurvivesRunningOutOfFds(t *testing.T) {
	needRoot(t)
	// 20 descriptors leave room for about eight clients next to the
	// daemon's own (stdio, pidfile, epoll, eventfds, TAP, netlink, socket).
	// prlimit sets the hard limit too: Go raises the soft limit to it.
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Wrap: []string{"prlimit", "--nofile=20:20"}, Args: []string{"-U"}})

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
