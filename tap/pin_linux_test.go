package tap

import (
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fdbLine is the bridge's entry for mac as `bridge fdb show` prints it, ""
// when it has none.
func (n *testNS) fdbLine(t *testing.T, br, mac string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.name, "bridge", "fdb", "show", "br", br).CombinedOutput()
	if err != nil {
		t.Fatalf("bridge fdb show: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, mac+" ") {
			return line
		}
	}
	return ""
}

// A frame from the LAN (or VXLAN) side of the bridge with a local client's
// source MAC must not move that MAC's entry off the TAP's port: the host's
// frames to the client would follow it (issue 15, finding 4).
func TestPinLocalHoldsClientMACsOnTheTAPPort(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1500") // and IPv6 off, so that DAD cannot change the state compared
	n.ip(t, "link", "add", "vktbrP", "type", "bridge")
	n.ip(t, "link", "add", "vktlan0", "type", "veth", "peer", "name", "vktlan1")
	n.ip(t, "link", "set", "vktlan0", "master", "vktbrP")
	n.ip(t, "link", "set", "vktlan0", "up")
	n.ip(t, "link", "set", "vktlan1", "up")
	// Up once and down again, as Close leaves it: a device never up shows
	// "qdisc noop".
	n.ip(t, "link", "set", "vktbrP", "up")
	n.ip(t, "link", "set", "vktbrP", "down")
	before := n.state(t)
	d, err := Open(Config{Prefix: tapPrefix, MTU: 1500, Bridge: "vktbrP"})
	if err != nil {
		t.Fatal(err)
	}
	lan := packetSocket(t, n.link(t, "vktlan1").Attrs().Index)
	client, other := [6]byte{0x02, 0, 0, 0, 0x0c, 1}, [6]byte{0x02, 0, 0, 0, 0x0c, 2}
	const clientMAC, otherMAC = "02:00:00:00:0c:01", "02:00:00:00:0c:02"
	fromLAN := func(src [6]byte) {
		t.Helper()
		if _, err := unix.Write(lan, testFrame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, src, "lan")); err != nil {
			t.Fatal(err)
		}
	}
	fromLAN(client) // learned behind the LAN port before the switch pins it
	if l := n.fdbLine(t, "vktbrP", clientMAC); !strings.Contains(l, "dev vktlan0") {
		t.Fatalf("the bridge did not learn %s on vktlan0: %q", clientMAC, l)
	}
	if err := d.PinLocal([][6]byte{client, other}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{clientMAC, otherMAC} {
		if l := n.fdbLine(t, "vktbrP", m); !strings.Contains(l, "dev "+d.Name()) || !strings.Contains(l, "sticky") || !strings.Contains(l, "static") {
			t.Errorf("%s is not pinned on %s: %q", m, d.Name(), l)
		}
	}
	fromLAN(client)
	if l := n.fdbLine(t, "vktbrP", clientMAC); !strings.Contains(l, "dev "+d.Name()) {
		t.Errorf("a LAN frame moved the pinned %s: %q", clientMAC, l)
	}
	if err := d.PinLocal([][6]byte{client}); err != nil {
		t.Fatal(err)
	}
	if l := n.fdbLine(t, "vktbrP", otherMAC); l != "" {
		t.Errorf("%s is still in the bridge after it was unpinned: %q", otherMAC, l)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after := n.state(t); after != before {
		t.Errorf("Close left the namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// A daemon killed on a TAP that stays in its bridge (a persistent TAP
// given with -t) leaves its pins; the next one takes them over and keeps
// only those of live clients.
func TestPinLocalAdoptsAKilledDaemonsPins(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1500")
	n.ip(t, "link", "add", "vktbrQ", "type", "bridge")
	n.ip(t, "tuntap", "add", "vkttapQ", "mode", "tap")
	n.ip(t, "link", "set", "vkttapQ", "master", "vktbrQ")
	d, err := Open(Config{Name: "vkttapQ", MTU: 1500, Bridge: "vktbrQ"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	out, err := exec.Command("ip", "netns", "exec", n.name, "bridge", "fdb", "add", "02:00:00:00:0d:01", "dev", "vkttapQ", "master", "static", "sticky").CombinedOutput()
	if err != nil {
		t.Fatalf("bridge fdb add: %v: %s", err, out)
	}
	live := [6]byte{0x02, 0, 0, 0, 0x0d, 2}
	if err := d.PinLocal([][6]byte{live}); err != nil {
		t.Fatal(err)
	}
	if l := n.fdbLine(t, "vktbrQ", "02:00:00:00:0d:01"); l != "" {
		t.Errorf("a stale pin survived: %q", l)
	}
	if l := n.fdbLine(t, "vktbrQ", "02:00:00:00:0d:02"); !strings.Contains(l, "sticky") {
		t.Errorf("the live MAC is not pinned: %q", l)
	}
}
