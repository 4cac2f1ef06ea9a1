package tap

import (
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// underlay gives the test namespace a veth pair standing for the link to
// the peer hosts: 198.19.0.1/24 here, the peer 198.19.0.2 beyond it, both
// ends with the given MTU.
func (n *testNS) underlay(t *testing.T, mtu string) {
	t.Helper()
	// IPv6 addresses pass from tentative to not as DAD ends, which would
	// make the before/after comparison depend on timing.
	out, err := exec.Command("ip", "netns", "exec", n.name, "sh", "-c",
		"echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6").CombinedOutput()
	if err != nil {
		t.Fatalf("disable IPv6: %v: %s", err, out)
	}
	n.ip(t, "link", "add", "vktu0", "mtu", mtu, "type", "veth", "peer", "name", "vktu1", "mtu", mtu)
	n.ip(t, "addr", "add", "198.19.0.1/24", "dev", "vktu0")
	n.ip(t, "link", "set", "vktu0", "up")
	n.ip(t, "link", "set", "vktu1", "up")
}

// state is what "nothing left behind" compares: links with their details,
// addresses and the forwarding database, as ip(8) and bridge(8) print them.
func (n *testNS) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"ip", "-d", "link", "show"}, {"ip", "addr", "show"}, {"bridge", "fdb", "show"}} {
		out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		b.Write(out)
	}
	return b.String()
}

var peer = netip.MustParseAddr("198.19.0.2")

func TestVXLANCreatedInABridgeAndRemoved(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1550")
	before := n.state(t)

	d, err := Open(Config{Prefix: tapPrefix, MTU: 1500, VXLAN: &VXLAN{VNI: 42, Remotes: []netip.Addr{peer}}})
	if err != nil {
		t.Fatal(err)
	}
	br, vx := n.link(t, "vkbr42"), n.link(t, "vkvx42")
	v, ok := vx.(*netlink.Vxlan)
	if !ok || v.VxlanId != 42 || v.Port != DefaultVXLANPort || vx.Attrs().MTU != 1500 || vx.Attrs().MasterIndex != br.Attrs().Index || !isUp(vx) {
		t.Errorf("vkvx42: %+v; want VNI 42, port 4789, MTU 1500, up, in vkbr42", vx)
	}
	if m := n.link(t, d.Name()).Attrs().MasterIndex; m != br.Attrs().Index {
		t.Errorf("TAP %s master %d, want vkbr42 (%d)", d.Name(), m, br.Attrs().Index)
	}
	if got := n.v4Addrs(t, br); !slices.Equal(got, []string{tapPrefix.String()}) {
		t.Errorf("bridge addresses %v, want [%s]", got, tapPrefix)
	}
	if d.HostMAC() != d.MAC() || [6]byte(br.Attrs().HardwareAddr) != d.MAC() {
		t.Errorf("bridge MAC %s, HostMAC %x; want both the TAP's %x (set, so the VXLAN port cannot move it)", br.Attrs().HardwareAddr, d.HostMAC(), d.MAC())
	}
	fdb, err := n.h.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	flood := false
	for _, e := range fdb {
		if e.HardwareAddr.String() == "00:00:00:00:00:00" && e.IP.String() == peer.String() {
			flood = true
		}
	}
	if !flood {
		t.Errorf("no 00:00:00:00:00:00 dst %s entry on vkvx42: %+v", peer, fdb)
	}
	if d.VXLANDev() != "vkvx42" || d.Bridge() != "vkbr42" || d.MTU() != 1500 || d.MTUNote() != "" {
		t.Errorf("VXLANDev %q Bridge %q MTU %d note %q", d.VXLANDev(), d.Bridge(), d.MTU(), d.MTUNote())
	}
	if _, ok, err := d.Remote(); !ok || err != nil {
		t.Errorf("Remote() ok %v err %v, want the device's counters", ok, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after := n.state(t); after != before {
		t.Errorf("Close left the namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestVXLANMTUFittedOrRefused(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1500")
	before := n.state(t)

	_, err := Open(Config{Prefix: tapPrefix, MTU: 1500, VXLAN: &VXLAN{VNI: 7, Remotes: []netip.Addr{peer}}})
	if err == nil {
		t.Fatal("Open with --mtu 1500 over a 1500-byte underlay succeeded")
	}
	for _, w := range []string{"--mtu 1500", "vktu0", "1550", "--mtu 1450"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if after := n.state(t); after != before {
		t.Errorf("a refused Open changed the namespace:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	d := openTAP(t, Config{Prefix: tapPrefix, MTU: 1500, FitMTU: true, VXLAN: &VXLAN{VNI: 7, Remotes: []netip.Addr{peer}}})
	if d.MTU() != 1450 || n.link(t, d.Name()).Attrs().MTU != 1450 || n.link(t, "vkvx7").Attrs().MTU != 1450 {
		t.Errorf("fitted: MTU %d, TAP %d, VXLAN %d; want 1450 for all", d.MTU(), n.link(t, d.Name()).Attrs().MTU, n.link(t, "vkvx7").Attrs().MTU)
	}
	if note := d.MTUNote(); !strings.Contains(note, "1450") || !strings.Contains(note, "1550") {
		t.Errorf("MTUNote %q, want the fitted MTU and the underlay MTU to raise to", note)
	}
}

// An attached device (--vxlan-dev) joins the bridge and leaves it as it
// was: its forwarding entries, MTU and down state untouched.
func TestVXLANDevAttachedAndLeftAsFound(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1550")
	n.ip(t, "link", "add", "evpn100", "type", "vxlan", "id", "100", "local", "198.19.0.1", "dstport", "4789", "nolearning")
	n.ip(t, "link", "set", "evpn100", "mtu", "1500")
	// Up once and down again: a device never up shows "qdisc noop", one
	// that has been up its default qdisc, which no one can take back.
	n.ip(t, "link", "set", "evpn100", "up")
	n.ip(t, "link", "set", "evpn100", "down")
	out, err := exec.Command("ip", "netns", "exec", n.name, "bridge", "fdb", "append", "02:00:00:00:01:01", "dev", "evpn100", "dst", "198.19.0.2").CombinedOutput()
	if err != nil {
		t.Fatalf("bridge fdb append: %v: %s", err, out)
	}
	before := n.state(t)

	d, err := Open(Config{Prefix: tapPrefix, MTU: 1500, Bridge: "vktbr9", VXLAN: &VXLAN{Dev: "evpn100"}})
	if err != nil {
		t.Fatal(err)
	}
	vx, br := n.link(t, "evpn100"), n.link(t, "vktbr9")
	if vx.Attrs().MasterIndex != br.Attrs().Index || !isUp(vx) {
		t.Errorf("evpn100 master %d up %v; want in vktbr9 (%d), up", vx.Attrs().MasterIndex, isUp(vx), br.Attrs().Index)
	}
	if d.VXLANDev() != "evpn100" {
		t.Errorf("VXLANDev %q, want evpn100", d.VXLANDev())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after := n.state(t); after != before {
		t.Errorf("Close left the namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestVXLANRefusals(t *testing.T) {
	n := enterNetns(t)
	n.underlay(t, "1550")
	n.ip(t, "link", "add", "vkvx5", "type", "vxlan", "id", "5", "dstport", "4789")
	n.ip(t, "link", "add", "vktbrA", "type", "bridge")
	n.ip(t, "link", "add", "evpn6", "type", "vxlan", "id", "6", "dstport", "4789")
	n.ip(t, "link", "set", "evpn6", "master", "vktbrA")
	before := n.state(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"name taken", Config{VXLAN: &VXLAN{VNI: 5, Remotes: []netip.Addr{peer}}}, []string{"vkvx5", "--vxlan-dev vkvx5", "ip link del vkvx5"}},
		{"no route", Config{VXLAN: &VXLAN{VNI: 8, Remotes: []netip.Addr{netip.MustParseAddr("198.18.200.1")}}}, []string{"--vxlan-remote 198.18.200.1", "no route"}},
		{"local not here", Config{VXLAN: &VXLAN{VNI: 8, Remotes: []netip.Addr{peer}, Local: netip.MustParseAddr("198.19.0.9")}}, []string{"--vxlan-local 198.19.0.9", "not an address of this host"}},
		{"dev missing", Config{VXLAN: &VXLAN{Dev: "nosuchvx"}}, []string{"nosuchvx", "does not exist"}},
		{"dev not vxlan", Config{VXLAN: &VXLAN{Dev: "vktu0"}}, []string{"vktu0", "veth", "not a VXLAN device"}},
		{"dev other VNI", Config{VXLAN: &VXLAN{VNI: 9, Dev: "vkvx5"}}, []string{"VNI 5", "not 9"}},
		{"dev in another bridge", Config{Bridge: "vktbrB", VXLAN: &VXLAN{Dev: "evpn6"}}, []string{"evpn6", "vktbrA", "-b vktbrA"}},
		{"dev MTU too small", Config{MTU: 9000, VXLAN: &VXLAN{Dev: "vkvx5"}}, []string{"--mtu 9000", "vkvx5", "--mtu 1500"}},
	} {
		d, err := Open(tc.cfg)
		if err == nil {
			d.Close()
			t.Errorf("%s: Open(%+v) succeeded", tc.name, tc.cfg)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
	}
	if after := n.state(t); after != before {
		t.Errorf("refused Opens changed the namespace:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
