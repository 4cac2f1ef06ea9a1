//go:build linux

package secure

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vknetd/vknetd/internal/testbed"
)

// TestClientCannotTakeAnotherClientsAddress: client B claims client A's
// address with ARP and IPv4; none of it reaches A or the TAP, A keeps
// talking to the host, and once A disconnects its address is free for B.
func TestClientCannotTakeAnotherClientsAddress(t *testing.T) {
	d := startDaemon(t)
	tapCap := startCapture(t, d.ns, tapName)

	ipA := netip.MustParseAddr("198.18.0.2")
	ipB := netip.MustParseAddr("198.18.0.3")
	aNS, aProc, aPort, macA := d.socat(t, ipA.String()+"/16")
	if ok, out := aNS.Ping(t, tapIP.String(), 2); !ok {
		t.Fatalf("client A cannot ping the host:\n%s", out)
	}
	aCap := startCapture(t, aNS, testbed.ClientTap)

	b, bPort := d.connect(t)
	macB := testbed.MAC(0xb2)
	b.Send(t, arp(layers.ARPRequest, macB, testbed.Broadcast, macB, ipB, noMAC, tapIP, nil))
	expectARPReply(t, b, d.tapMAC, ipB)

	const pings = 15
	ping := startPing(t, aNS, pings)

	type attack struct {
		name, reason string
		frame        func(mark []byte) []byte
	}
	attacks := []attack{
		{"gratuitous ARP request for A's address", "ip-binding-conflict", func(m []byte) []byte {
			return arp(layers.ARPRequest, macB, testbed.Broadcast, macB, ipA, noMAC, ipA, m)
		}},
		{"gratuitous ARP reply for A's address", "ip-binding-conflict", func(m []byte) []byte {
			return arp(layers.ARPReply, macB, testbed.Broadcast, macB, ipA, testbed.Broadcast, ipA, m)
		}},
		{"ARP reply to the host: A's address is at B", "ip-binding-conflict", func(m []byte) []byte {
			return arp(layers.ARPReply, macB, d.tapMAC, macB, ipA, d.tapMAC, tapIP, m)
		}},
		{"ARP reply to A: the host's address is at B", "tap-addr-claimed", func(m []byte) []byte {
			return arp(layers.ARPReply, macB, macA, macB, tapIP, macA, ipA, m)
		}},
		{"ARP request to A as A's own address", "ip-binding-conflict", func(m []byte) []byte {
			return arp(layers.ARPRequest, macB, macA, macB, ipA, noMAC, ipA, m)
		}},
		{"ICMP echo to the host from A's address", "ip-binding-conflict", func(m []byte) []byte {
			return testbed.ICMPEcho(macB, d.tapMAC, ipA, tapIP, icmpID, 1, m)
		}},
		{"UDP to the host from A's address", "ip-binding-conflict", func(m []byte) []byte {
			return testbed.IPv4UDP(macB, d.tapMAC, ipA, tapIP, 40000, 9, m)
		}},
		{"TCP SYN to the host from A's address", "ip-binding-conflict", func(m []byte) []byte {
			return tcp4(macB, d.tapMAC, ipA, tapIP, m)
		}},
		{"broadcast UDP from A's address", "ip-binding-conflict", func(m []byte) []byte {
			return testbed.IPv4UDP(macB, testbed.Broadcast, ipA, netip.MustParseAddr("198.18.255.255"), 40000, 9, m)
		}},
		{"ICMP echo to A from the host's address", "tap-addr-claimed", func(m []byte) []byte {
			return testbed.ICMPEcho(macB, macA, tapIP, ipA, icmpID, 1, m)
		}},
		// A live MAC on another port is refused before its addresses are
		// even looked at.
		{"A's MAC and address both", "src-mac-in-use", func(m []byte) []byte {
			return testbed.IPv4UDP(macA, d.tapMAC, ipA, tapIP, 40000, 9, m)
		}},
		{"A's MAC with B's own address", "src-mac-in-use", func(m []byte) []byte {
			return testbed.IPv4UDP(macA, d.tapMAC, ipB, tapIP, 40000, 9, m)
		}},
	}
	want := map[string]int{}
	var sent [][]byte
	for i, a := range attacks {
		f := a.frame(spoofMark(i))
		sent = append(sent, f)
		b.Send(t, f)
		want[a.reason]++
		time.Sleep(50 * time.Millisecond)
	}
	// B's own traffic passes, to A and to the host: the captures work.
	b.Send(t, testbed.IPv4UDP(macB, macA, ipB, ipA, 40000, 9, legitMark(0)))
	b.Send(t, testbed.IPv4UDP(macB, d.tapMAC, ipB, tapIP, 40000, 9, legitMark(1)))
	b.Send(t, arp(layers.ARPRequest, macB, testbed.Broadcast, macB, ipB, noMAC, ipA, legitMark(2)))
	if !aCap.waitFor(t, legitMark(0), 3*time.Second) || !aCap.waitFor(t, legitMark(2), 3*time.Second) {
		t.Error("B's legitimate frames did not reach A")
	}
	if !tapCap.waitFor(t, legitMark(1), 3*time.Second) || !tapCap.waitFor(t, legitMark(2), 3*time.Second) {
		t.Error("B's legitimate frames did not reach the TAP")
	}
	// A answers B's legitimate ARP request with its own MAC.
	expectFrame(t, b, "A's ARP reply to B", func(p gopacket.Packet) bool {
		a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
		return ok && a.Operation == layers.ARPReply && bytes.Equal(a.SourceHwAddress, macA[:]) && bytes.Equal(a.SourceProtAddress, ip4(ipA))
	})
	finishPing(t, ping, pings)
	time.Sleep(100 * time.Millisecond)

	for i, a := range attacks {
		for where, c := range map[string]*capture{"client A": aCap, "the TAP": tapCap} {
			for _, f := range c.containing(t, spoofMark(i)) {
				t.Errorf("HOLE: %q (expected drop %s) reached %s\n sent:     %s\n captured: %s",
					a.name, a.reason, where, hex.EncodeToString(sent[i]), hex.EncodeToString(f))
			}
		}
	}
	if got := drops(d.counters(t, bPort)); !sameDrops(got, want) {
		t.Errorf("B's drop counters:\n got %v\nwant %v", sortedCounts(got), sortedCounts(want))
	}
	// Neither side's ARP cache was poisoned.
	if got := neighbours(t, aNS, testbed.ClientTap)[tapIP]; got != d.tapMAC {
		t.Errorf("HOLE: A's ARP cache has the host %v at %s, want %s", tapIP, hw(got), hw(d.tapMAC))
	}
	if got := neighbours(t, d.ns, tapName)[ipA]; got != macA {
		t.Errorf("HOLE: the host's ARP cache has A's %v at %s, want %s", ipA, hw(got), hw(macA))
	}

	// A leaves: its binding goes with it, and B may take the address.
	if err := aProc.Stop(testbed.StopTimeout); err != nil {
		t.Fatal(err)
	}
	d.waitDeparture(t, aPort)
	b.Send(t, arp(layers.ARPRequest, macB, testbed.Broadcast, macB, ipA, noMAC, ipA, legitMark(3)))
	b.Send(t, testbed.ICMPEcho(macB, d.tapMAC, ipA, tapIP, icmpID, 7, legitMark(4)))
	for i := 3; i <= 4; i++ {
		if !tapCap.waitFor(t, legitMark(i), 3*time.Second) {
			t.Errorf("after A left, B's frame %s from %v did not reach the TAP", legitMark(i), ipA)
		}
	}
	expectFrame(t, b, "the host's echo reply to B at "+ipA.String(), func(p gopacket.Packet) bool {
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		ic, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		return ip != nil && ic != nil && ic.TypeCode.Type() == layers.ICMPv4TypeEchoReply &&
			ip.DstIP.Equal(ip4(ipA)) && bytes.Contains(ic.Payload, legitMark(4))
	})
	if got := drops(d.counters(t, bPort)); !sameDrops(got, want) {
		t.Errorf("B's frames from A's released address were dropped:\n got %v\nwant %v", sortedCounts(got), sortedCounts(want))
	}
}

func hw(m [6]byte) net.HardwareAddr { return net.HardwareAddr(m[:]) }

// expectFrame reads c until a frame satisfies match, failing after 3s.
func expectFrame(t *testing.T, c *testbed.SeqpacketClient, what string, match func(gopacket.Packet) bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		f, err := c.Recv(time.Until(deadline))
		if err != nil {
			break
		}
		if match(gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)) {
			return
		}
	}
	t.Errorf("%s did not arrive within 3s", what)
}
