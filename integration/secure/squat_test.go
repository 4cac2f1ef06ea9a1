//go:build linux

package secure

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vknetd/vknetd/internal/testbed"
)

const (
	squatNetwork = "198.18.7.1/24"
	squatGroup   = 4301 // the daemon's --group
)

var (
	squatTap = netip.MustParseAddr("198.18.7.1")
	squatter = testbed.User{UID: 4242, GID: 4242, Groups: []int{squatGroup}}
	tenantB  = testbed.User{UID: 4343, GID: 4343, Groups: []int{squatGroup}}
)

// TestUserCannotSquatAnotherUsersAddresses is issue 21's probe. On a /24,
// one user opened 16 SEQPACKET connections, each announcing 16 addresses by
// gratuitous ARP (--port-ips is 16), and held every address of the
// network: another user's client was refused as ip-binding-conflict, 0 of
// 3 announcements through. With --user-ips (on by default: a quarter of
// the network's hosts) or a --user-net range for the victim, the victim's
// announcements get through and the squatter's excess claims are dropped
// under the new reasons. B's ARP requests for the host, from its address,
// stand for its announcements: the host's replies prove they got through.
func TestUserCannotSquatAnotherUsersAddresses(t *testing.T) {
	victimIP := netip.MustParseAddr("198.18.7.200")
	for _, mode := range []struct {
		name    string
		args    []string
		reason  string // what the squatter's excess claims are dropped as
		refused int    // how many of its 256 claims: 253 addresses, 3 claimed twice
	}{
		// The default mode runs the old daemon's command line too: without
		// the default quota the squatter holds .200 and the test fails.
		{"default --user-ips (63 on a /24)", nil, "user-binding-limit", 253 - 63},
		{"--user-ips 32", []string{"--user-ips", "32"}, "user-binding-limit", 253 - 32},
		// A quota that lets the squatter take every address outside B's
		// range: the range alone protects B.
		{"--user-net for B", []string{"--user-ips", "254", "--user-net", "4343=198.18.7.192/26"}, "ip-other-user-net", 63},
	} {
		t.Run(mode.name, func(t *testing.T) {
			d := squatDaemon(t, mode.args...)
			var aPorts []int
			claims := 0
			for i := 0; i < 16; i++ {
				m := testbed.MAC(byte(0x10 + i))
				c, port := d.connectAs(t, squatter)
				aPorts = append(aPorts, port)
				for j := 0; j < 16; j++ {
					a := netip.AddrFrom4([4]byte{198, 18, 7, byte(2 + claims%253)})
					claims++
					c.Send(t, testbed.ARPRequest(m, a, a)) // gratuitous: "a is mine"
				}
			}
			time.Sleep(300 * time.Millisecond)

			b, bPort := d.connectAs(t, tenantB)
			macB := testbed.MAC(0xbb)
			for i := 0; i < 3; i++ {
				b.Send(t, testbed.ARPRequest(macB, victimIP, squatTap))
			}
			replies := 0
			for deadline := time.Now().Add(2 * time.Second); replies < 3 && time.Now().Before(deadline); {
				f, err := b.Recv(200 * time.Millisecond)
				if err == nil && isARPReplyTo(f, macB, victimIP) {
					replies++
				}
			}
			counters := d.p.Counters(t)
			if got := drops(counters.Port(t, bPort)); replies != 3 || len(got) != 0 {
				t.Errorf("HOLE: %d of 3 of B's ARP requests from %v were answered by the host; B's drops %v", replies, victimIP, got)
			}
			total := map[string]int{}
			for _, p := range aPorts {
				for r, n := range drops(counters.Port(t, p)) {
					total[r] += n
				}
			}
			want := map[string]int{mode.reason: mode.refused, "ip-binding-conflict": 3}
			if !sameDrops(total, want) {
				t.Errorf("the squatter's drops %v, want %v", sortedCounts(total), sortedCounts(want))
			}
		})
	}
}

// squatDaemon is a secure-mode vknetd on squatNetwork whose socket users of
// squatGroup may connect to.
func squatDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireTool(t, "ip")
	dir := testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	ns := testbed.NewNetns(t)
	ns.DisableIPv6(t)
	p := ns.StartDaemon(t, vknetd, testbed.DaemonConfig{
		Sock:  filepath.Join(dir, "vknet"),
		Group: strconv.Itoa(squatGroup),
		Args:  append(append([]string{"-t", tapName}, args...), squatNetwork),
	})
	return &daemon{ns: ns, p: p, tapMAC: ns.LinkMAC(t, tapName)}
}

// connectAs dials a raw client as user u and returns it with its port.
func (d *daemon) connectAs(t *testing.T, u testbed.User) (*testbed.SeqpacketClient, int) {
	t.Helper()
	before := len(d.connectedPorts())
	c := testbed.DialSeqpacketAs(t, d.p.Sock, u)
	return c, d.waitNewPort(t, before)
}

// isARPReplyTo reports an ARP reply to mac about its address ip.
func isARPReplyTo(f []byte, mac [6]byte, ip netip.Addr) bool {
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	return ok && a.Operation == layers.ARPReply && len(a.DstHwAddress) == 6 && len(a.DstProtAddress) == 4 &&
		[6]byte(a.DstHwAddress) == mac && netip.AddrFrom4([4]byte(a.DstProtAddress)) == ip
}
