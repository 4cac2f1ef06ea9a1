//go:build linux

package integration

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

func TestMonitorPrintsOneLinePerFloodedFrame(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	d := startDaemon(t, ns, testbed.DaemonConfig{Args: []string{"-U"}})
	mon := ns.StartSplit(t, vknetd, "-c", "-p", d.Sock)
	d.waitLog(5*time.Second, "client connected")
	a, b := d.connect(testMAC(1)), d.connect(testMAC(2))
	learnAll(t, a, b)

	arpFrame := testbed.ARPRequest(a.mac, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"))
	a.send(arpFrame)
	b.expectARP(t)
	a.send(rawFrame(b.mac, a.mac, tagUnicast, 1)) // learned unicast: not flooded, not shown
	b.expect(tagUnicast, 2*time.Second)
	b.send(rawFrame(testbed.Broadcast, b.mac, tagBarrier, 0))

	fromB := regexp.MustCompile(`(?m)^\S+ ` + macString(b.mac) + ` > ff:ff:ff:ff:ff:ff .*\n`)
	if !waitFor(5*time.Second, func() bool { return len(fromB.FindAllString(mon.Stdout(), -1)) == 2 }) {
		t.Fatalf("vknetd -c did not print b's two broadcasts within 5s; stdout:\n%s\nstderr:\n%s", mon.Stdout(), mon.Stderr())
	}
	var fromA []string
	for _, l := range strings.Split(mon.Stdout(), "\n") {
		if strings.Contains(l, " "+macString(a.mac)+" > ") {
			fromA = append(fromA, l)
		}
	}
	// a's learning broadcast and its ARP request; never the unicast to b.
	if len(fromA) != 2 {
		t.Fatalf("vknetd -c printed %d lines for frames from a, want 2 (broadcast, ARP):\n%s", len(fromA), strings.Join(fromA, "\n"))
	}
	arp := regexp.MustCompile(`^(\S+) ` + regexp.QuoteMeta(macString(a.mac)) + ` > ff:ff:ff:ff:ff:ff ARP len ` + strconv.Itoa(len(arpFrame)) + `: request who-has 198\.18\.0\.3 tell 198\.18\.0\.2 \(` + regexp.QuoteMeta(macString(a.mac)) + `\)$`)
	m := arp.FindStringSubmatch(fromA[1])
	if m == nil {
		t.Fatalf("ARP line does not show time, MACs, ethertype and addresses:\n%s\nwant it to match %s", fromA[1], arp)
	}
	if ts, err := time.Parse(time.RFC3339Nano, m[1]); err != nil || time.Since(ts) > time.Minute || time.Since(ts) < -time.Minute {
		t.Errorf("ARP line starts with %q, want the time it arrived (%v)", m[1], err)
	}
}

// expectARP waits for an ARP frame, skipping others.
func (c *rawClient) expectARP(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, err := c.recv(time.Until(deadline))
		if err != nil {
			t.Fatalf("client port %d waited for the ARP request: %v", c.port, err)
		}
		if len(f) >= 14 && f[12] == 0x08 && f[13] == 0x06 {
			return
		}
	}
}
