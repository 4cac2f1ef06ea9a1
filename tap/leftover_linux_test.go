package tap

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const testMark = "vknetd:/run/vkt-test.pid"

// kill leaves d as a daemon killed with SIGKILL leaves it: its descriptors
// closed (the TAP it created vanishes with its fd), nothing undone.
func kill(t *testing.T, d *Device) {
	t.Helper()
	if err := unix.Close(d.fd); err != nil {
		t.Fatal(err)
	}
	d.os.h.Close()
	d.mu.Lock()
	d.closed, d.undo = true, nil
	d.mu.Unlock()
}

// Finding 6 of issue 15: a --vxlan daemon killed with SIGKILL left vkbr42
// and vkvx42, and the next start refused ("a vxlan device vkvx42 exists
// already"). What Open creates carries the mark; the next Open with the
// same mark removes it and starts afresh, and its Close leaves nothing.
func TestLeftoversOfAKilledOpenAreReplaced(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1550")
	before := n.state(t)
	cfg := Config{Prefix: tapPrefix, MTU: 1500, Mark: testMark, VXLAN: &VXLAN{VNI: 42, Remotes: []netip.Addr{peer}}}

	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	created := d.Created()
	if len(created) != 2 || created[0].Name != "vkbr42" || created[1].Name != "vkvx42" {
		t.Fatalf("Created() = %+v, want vkbr42 and vkvx42", created)
	}
	for _, name := range []string{"vkbr42", "vkvx42"} {
		if a := n.link(t, name).Attrs().Alias; a != testMark {
			t.Errorf("%s alias %q, want the mark %q", name, a, testMark)
		}
	}
	oldVX := n.link(t, "vkvx42").Attrs().Index
	kill(t, d)
	n.gone(t, d.Name())
	n.link(t, "vkbr42")
	n.link(t, "vkvx42")

	d2, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open after a killed Open: %v", err)
	}
	if vx := n.link(t, "vkvx42"); vx.Attrs().Index == oldVX || vx.Attrs().MasterIndex != n.link(t, "vkbr42").Attrs().Index {
		t.Errorf("vkvx42 (index %d, was %d) is not a new device in vkbr42", vx.Attrs().Index, oldVX)
	}
	if got := n.v4Addrs(t, n.link(t, "vkbr42")); len(got) != 1 || got[0] != tapPrefix.String() {
		t.Errorf("bridge addresses %v, want [%s]", got, tapPrefix)
	}
	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}
	if after := n.state(t); after != before {
		t.Errorf("leftovers replaced and closed, the namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// A device of the name Open would create that does not carry this mark is
// someone else's: refused, untouched, with a message naming it and what to
// do.
func TestUnmarkedOrForeignDeviceRefused(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1550")
	n.ip(t, "link", "add", "vkvx42", "type", "vxlan", "id", "42", "dstport", "4789")
	n.ip(t, "link", "add", "vkvx43", "type", "vxlan", "id", "43", "dstport", "4790")
	n.ip(t, "link", "set", "vkvx43", "alias", "vknetd:/run/other.pid")
	before := n.state(t)
	for _, tc := range []struct {
		vni  int
		want []string
	}{
		{42, []string{"vkvx42", "vknetd did not create it", testMark, "ip link del vkvx42", "--vxlan-dev vkvx42"}},
		{43, []string{"vkvx43", "vknetd:/run/other.pid", "another vknetd"}},
	} {
		d, err := Open(Config{Prefix: tapPrefix, MTU: 1500, Mark: testMark, VXLAN: &VXLAN{VNI: tc.vni, Remotes: []netip.Addr{peer}}})
		if err == nil {
			d.Close()
			t.Errorf("VNI %d: Open succeeded over a device it did not create", tc.vni)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("VNI %d: error %q does not say %q", tc.vni, err, w)
			}
		}
	}
	if after := n.state(t); after != before {
		t.Errorf("refused Opens changed the namespace:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// RemoveCreated is the keeper's: it deletes what a killed Open created,
// and nothing that has since been replaced by a device of the same name.
func TestRemoveCreated(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1550")
	before := n.state(t)
	d, err := Open(Config{Prefix: tapPrefix, MTU: 1500, Mark: testMark, VXLAN: &VXLAN{VNI: 42, Remotes: []netip.Addr{peer}}})
	if err != nil {
		t.Fatal(err)
	}
	created := d.Created()
	kill(t, d)
	// The bridge's index now names another bridge of that name, unmarked.
	n.ip(t, "link", "del", "vkbr42")
	n.ip(t, "link", "add", "vkbr42", "type", "bridge")
	replaced := n.link(t, "vkbr42").Attrs().Index
	for i := len(created) - 1; i >= 0; i-- {
		if err := RemoveCreated(created[i]); err != nil {
			t.Fatalf("RemoveCreated(%+v): %v", created[i], err)
		}
	}
	n.gone(t, "vkvx42")
	if got := n.link(t, "vkbr42").Attrs().Index; got != replaced {
		t.Fatalf("the replacing vkbr42 (index %d) is gone or changed (%d)", replaced, got)
	}
	created[0].Index = replaced // same name and index, but no mark
	if err := RemoveCreated(created[0]); err != nil {
		t.Fatal(err)
	}
	n.link(t, "vkbr42")
	n.ip(t, "link", "del", "vkbr42")
	if err := RemoveCreated(created[1]); err != nil {
		t.Fatalf("RemoveCreated of a device already gone: %v", err)
	}
	if after := n.state(t); after != before {
		t.Errorf("the namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
