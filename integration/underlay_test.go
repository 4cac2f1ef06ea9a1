//go:build linux

package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
)

// Issue 15, findings 4 to 6: what the underlay (other hosts over VXLAN, or
// anything behind the TAP) can do to a host's local clients, and a
// --vxlan daemon killed with SIGKILL.

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens an AF_PACKET socket on link in ns: frames sent on it
// leave by link as if the namespace's kernel sent them; with listen, it
// also queues (up to 8 MiB) every frame link receives, for packets.
func packetSocket(t *testing.T, ns *testbed.Netns, link string, listen bool) int {
	t.Helper()
	fd := -1
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		proto := uint16(0) // send only
		if listen {
			proto = unix.ETH_P_ALL
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(proto)))
		if err != nil {
			return fmt.Errorf("socket(AF_PACKET): %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifi.Index})
	})
	if fd >= 0 {
		t.Cleanup(func() { unix.Close(fd) })
	}
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", link, ns.Name, err)
	}
	return fd
}

// received drains a listening packet socket: the frames its link
// received (not those it sent).
func received(t *testing.T, fd int) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 65536)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EAGAIN {
			return out
		}
		if err != nil {
			t.Fatalf("reading the capture: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

func sendFrame(t *testing.T, fd int, f []byte) {
	t.Helper()
	if err := unix.Send(fd, f, 0); err != nil {
		t.Fatalf("sending a crafted frame: %v", err)
	}
}

// tapCounter reads one of the TAP's counters (port 0) from the SIGUSR1
// report; 0 when the report leaves it out (a zero drop counter).
func tapCounter(t *testing.T, d *daemon, key string) int {
	t.Helper()
	v := d.Counters(t).Port(t, 0)[key]
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("TAP counter %s = %q", key, v)
	}
	return n
}

// Finding 4: one VXLAN datagram from another host whose inner source MAC
// is a live local client's moved that MAC to the TAP: the client's
// traffic went to the sender, and its own frames were dropped as
// src-mac-in-use. Host B here is the attacker: a bare kernel VXLAN device
// of the same VNI, through which the test sends frames from a client of A's
// MAC, to broadcast, to another client and to host A itself (which only
// host A's bridge sees). A counts what reaches the switch as
// remote-mac-conflict, its clients keep reaching each other and the host,
// and nothing to or from that client (but its broadcasts) reaches B.
func TestVXLANUnderlayCannotStealALocalMAC(t *testing.T) {
	needRoot(t)
	ha, hb := twoHosts(t, "1550")
	da := startDaemon(t, ha, testbed.DaemonConfig{Args: vxlanArgs(underlayB, "198.18.0.1/16")})
	hb.Run(t, "ip", "link", "add", "vkxatk", "type", "vxlan", "id", "42", "local", underlayB, "dstport", "4789")
	hb.Run(t, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vkxatk", "dst", underlayA)
	hb.Run(t, "ip", "link", "set", "vkxatk", "up")
	seen := packetSocket(t, hb, "vkxatk", true)
	attack := packetSocket(t, hb, "vkxatk", false)

	a1, _ := testbed.SocatClient(t, da.Sock, "198.18.1.1/16")
	a2, _ := testbed.SocatClient(t, da.Sock, "198.18.1.2/16")
	ping(t, a1, "198.18.1.2", 10*time.Second)
	ping(t, a1, "198.18.0.1", 10*time.Second)
	victim, peer := a1.LinkMAC(t, testbed.ClientTap), a2.LinkMAC(t, testbed.ClientTap)
	// The daemon pins its clients' MACs in the host's bridge within a
	// second: the bridge learns by itself before the switch sees a frame.
	if !waitFor(5*time.Second, func() bool { return pinned(ha, "vkbr42", da.TAP, victim) }) {
		out, _ := ha.Try("bridge", "fdb", "show", "br", "vkbr42")
		t.Errorf("host A's bridge has not pinned the victim's MAC %s on %s:\n%s", net.HardwareAddr(victim[:]), da.TAP, out)
	}
	received(t, seen) // a1's and a2's ARP broadcasts reached B, as they should

	broadcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	hostA := ha.LinkMAC(t, "vkbr42")
	payload := make([]byte, 46)
	const attacks = 3
	for i := 0; i < attacks; i++ {
		sendFrame(t, attack, testbed.EthernetFrame(broadcast, victim, 0x88b5, payload))
		sendFrame(t, attack, testbed.EthernetFrame(peer, victim, 0x88b5, payload))
		sendFrame(t, attack, testbed.EthernetFrame(hostA, victim, 0x88b5, payload))
	}
	if !waitFor(5*time.Second, func() bool { return tapCounter(t, da, "drop_remote-mac-conflict") >= 2*attacks }) {
		t.Errorf("host A did not count %d remote-mac-conflict drops on its TAP: %v", 2*attacks, da.Counters(t).Port(t, 0))
	}

	// The victim and its peer still reach each other and the host, both
	// ways; the host first, before the victim sends anything that would
	// have the host's bridge learn its MAC back.
	for _, c := range []struct {
		from *testbed.Netns
		to   string
	}{{ha, "198.18.1.1"}, {a2, "198.18.1.1"}, {a1, "198.18.1.2"}, {a1, "198.18.0.1"}} {
		out, err := c.from.Try("ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", c.to)
		if err != nil || !strings.Contains(out, " 5 received") {
			t.Errorf("ping %s from %s after the attack: %v\n%s", c.to, c.from.Name, err, out)
		}
	}
	leaked := 0
	for _, f := range received(t, seen) {
		dst, src := [6]byte(f[0:6]), [6]byte(f[6:12])
		if dst == victim || src == victim && dst[0]&1 == 0 {
			leaked++
		}
	}
	if leaked != 0 {
		t.Errorf("%d unicast frames to or from the victim reached the attacker over VXLAN", leaked)
	}
	if code := da.stop(); code != 0 {
		t.Errorf("vknetd exited with %d; stderr:\n%s", code, da.Stderr())
	}
}

// pinned says whether the bridge br in ns holds mac on port dev as a
// sticky entry: the daemon's pin.
func pinned(ns *testbed.Netns, br, dev string, mac [6]byte) bool {
	out, _ := ns.Try("bridge", "fdb", "show", "br", br)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, net.HardwareAddr(mac[:]).String()+" dev "+dev+" ") && strings.Contains(line, "sticky") {
			return true
		}
	}
	return false
}

// Finding 5: 20,000 source MACs from the TAP's side filled --mac-max, and
// a client connecting afterwards had every frame dropped as
// mac-table-full. They are sent here straight onto the TAP (what the
// bridge would hand it from VXLAN); the TAP learns --remote-macs of them,
// a quarter of --mac-max, and a new client reaches the host.
func TestUnderlayMACFloodLeavesRoomForClients(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	d := startDaemon(t, ns, testbed.DaemonConfig{Args: []string{"198.18.0.1/16"}})
	inject := packetSocket(t, ns, d.TAP, false)
	broadcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	payload := make([]byte, 46)
	const flood = 20000
	for i := 0; i < flood; i++ {
		src := [6]byte{0x02, 0xee, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		sendFrame(t, inject, testbed.EthernetFrame(broadcast, src, 0x88b5, payload))
		if i%200 == 199 {
			time.Sleep(2 * time.Millisecond) // the TAP's queue holds 500 frames
		}
	}
	var tap testbed.LogRecord
	if !waitFor(10*time.Second, func() bool {
		tap = d.Counters(t).Port(t, 0)
		return tap["macs"] == "4096"
	}) {
		t.Errorf("the TAP holds %s MACs after %d from the underlay, want --remote-macs, 4096 (counters %v)", tap["macs"], flood, tap)
	}
	c, _ := testbed.SocatClient(t, d.Sock, "198.18.1.1/16")
	ping(t, c, "198.18.0.1", 10*time.Second)
	t.Logf("after %d underlay MACs: TAP %v", flood, tap)
	if code := d.stop(); code != 0 {
		t.Errorf("vknetd exited with %d; stderr:\n%s", code, d.Stderr())
	}
}

// Finding 6: a --vxlan daemon killed with SIGKILL left vkbr42 and vkvx42,
// and the next start refused. It starts now (removing what it had made,
// which carries its mark) and works; a vkvx42 it did not make is still
// refused, untouched; under --user the keeper removes the devices when
// the daemon is killed.
func TestVXLANDaemonRestartsAfterSIGKILL(t *testing.T) {
	needRoot(t)
	ha, hb := twoHosts(t, "1550")
	beforeA, beforeB := hostState(t, ha), hostState(t, hb)
	group := socketGroup(t).Name
	lookupDropUser(t)
	dir := testbed.ShortTempDir(t)
	cfgA := testbed.DaemonConfig{Pidfile: dir + "/vknetd.pid", Sock: dir + "/vknet", Args: vxlanArgs(underlayB, "198.18.0.1/16")}

	da := startDaemon(t, ha, cfgA)
	db := startDaemon(t, hb, testbed.DaemonConfig{Args: vxlanArgs(underlayA, "198.18.0.2/16")})
	da.signal(syscall.SIGKILL)
	da.exitCode(5 * time.Second)
	for _, dev := range []string{"vkbr42", "vkvx42"} {
		if _, ok := ha.LinkShow(dev); !ok {
			t.Fatalf("%s is gone after SIGKILL: nothing left to test", dev)
		}
	}
	if _, ok := ha.LinkShow(da.TAP); ok {
		t.Errorf("the TAP %s the killed daemon created is still there", da.TAP)
	}
	da = startDaemon(t, ha, cfgA)
	a1, _ := testbed.SocatClient(t, da.Sock, "198.18.1.1/16")
	ping(t, a1, "198.18.0.2", 10*time.Second) // host B, across VXLAN
	ping(t, a1, "198.18.0.1", 10*time.Second)
	if code := da.stop(); code != 0 {
		t.Fatalf("the restarted vknetd exited with %d; stderr:\n%s", code, da.Stderr())
	}
	sameState(t, "host A after the restarted daemon stopped", beforeA, hostState(t, ha))

	// A vkvx42 someone else made is not the daemon's to remove.
	ha.Run(t, "ip", "link", "add", "vkvx42", "type", "vxlan", "id", "42", "dstport", "4789")
	before := hostState(t, ha)
	_, err := tryStartDaemon(t, ha, cfgA)
	if err == nil || !strings.Contains(err.Error(), "vkvx42") || !strings.Contains(err.Error(), "did not create it") ||
		!strings.Contains(err.Error(), "ip link del vkvx42") {
		t.Errorf("start over an unmarked vkvx42: %v; want a refusal naming it and what to do", err)
	}
	sameState(t, "host A after the refused start", before, hostState(t, ha))
	ha.Run(t, "ip", "link", "del", "vkvx42")

	// Under --user the keeper removes the devices once the daemon is gone.
	if code := db.stop(); code != 0 {
		t.Fatalf("vknetd on host B exited with %d; stderr:\n%s", code, db.Stderr())
	}
	db = startDroppingDaemon(t, hb, group, vxlanArgs(underlayA, "198.18.0.2/16")...)
	// With only CAP_NET_ADMIN left it still pins its clients' MACs.
	b1, _ := testbed.SocatClient(t, db.Sock, "198.18.2.1/16")
	ping(t, b1, "198.18.0.2", 10*time.Second)
	b1MAC := b1.LinkMAC(t, testbed.ClientTap)
	if !waitFor(5*time.Second, func() bool { return pinned(hb, "vkbr42", db.TAP, b1MAC) }) {
		t.Errorf("vknetd --user did not pin its client's MAC on %s; log:\n%s", db.TAP, db.Stderr())
	}
	db.signal(syscall.SIGKILL)
	db.exitCode(5 * time.Second)
	if !waitFor(5*time.Second, func() bool {
		_, br := hb.LinkShow("vkbr42")
		_, vx := hb.LinkShow("vkvx42")
		return !br && !vx && !fileExists(db.Sock) && !fileExists(db.Pidfile)
	}) {
		t.Errorf("5s after SIGKILL of vknetd --user the keeper has not removed its devices and files")
	}
	sameState(t, "host B after its vknetd --user was killed", beforeB, hostState(t, hb))
}
