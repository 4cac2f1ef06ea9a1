//go:build linux

package secure

import (
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/vknetd/vknetd/internal/testbed"
)

// The tests below keep fixed the holes this suite once found (the first
// version of secure mode had all three).

// TestDHCPClientHardwareAddressSpoof: a client releasing another client's
// lease (chaddr and client identifier of the victim, from its own MAC)
// made dnsmasq free the victim's address. A DHCP client message's chaddr
// and Ethernet client identifier must now be its source MAC, as ARP's
// sender MAC must.
func TestDHCPClientHardwareAddressSpoof(t *testing.T) {
	testbed.RequireTool(t, "dnsmasq", "busybox")
	d := startDaemon(t)
	tapCap := startCapture(t, d.ns, tapName)
	leases := startDnsmasq(t, d)
	_, _, victimMAC, lease := dhcpClient(t, d)

	attacker, _ := d.connect(t)
	mark := spoofMark(0)
	release := &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet, Xid: 0x5eed,
		ClientIP: ip4(lease.Addr()), ClientHWAddr: victimMAC[:],
		Options: layers.DHCPOptions{
			layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(layers.DHCPMsgTypeRelease)}),
			layers.NewDHCPOption(layers.DHCPOptServerID, ip4(tapIP)),
			layers.NewDHCPOption(layers.DHCPOptClientID, append([]byte{1}, victimMAC[:]...)),
			layers.NewDHCPOption(layers.DHCPOptMessage, mark),
		}}
	// To 255.255.255.255: Linux drops a datagram from 0.0.0.0 to a
	// unicast address as a martian before dnsmasq could see it.
	ip := ipv4(layers.IPProtocolUDP, zeroIP, allOnes)
	u := &layers.UDP{SrcPort: 68, DstPort: 67}
	_ = u.SetNetworkLayerForChecksum(ip)
	frame := build(eth(macA, testbed.Broadcast, layers.EthernetTypeIPv4), ip, u, release)
	attacker.Send(t, frame)

	// A legitimate frame sent after it bounds the wait.
	attacker.Send(t, dhcp4(macA, legitMark(0)))
	if !tapCap.waitFor(t, legitMark(0), 3*time.Second) {
		t.Fatal("the attacker's legitimate DHCP frame did not reach the TAP")
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(tapCap.containing(t, mark)); n > 0 {
		t.Errorf("HOLE: a DHCPRELEASE with the victim's chaddr %s, sent from %s, reached the TAP:\n%s",
			hw(victimMAC), hw(macA), hex.EncodeToString(frame))
	}
	if db, _ := os.ReadFile(leases); !strings.Contains(string(db), lease.Addr().String()) {
		t.Errorf("HOLE: dnsmasq released the victim's lease %v on the attacker's word; leases now:\n%s", lease.Addr(), db)
	}
}

// TestOneClientCannotFillTheBindingTable: a client may use any free
// address of the CIDR, but at most --port-ips of them (16 by default):
// without that bound one client with one MAC bound --mac-max addresses and
// every client that came later was refused with binding-table-full.
func TestOneClientCannotFillTheBindingTable(t *testing.T) {
	d := startDaemon(t, "--mac-max", "64", "--port-macs", "4")
	attacker, _ := d.connect(t)
	for i := 1; i <= 64; i++ {
		src := ipAt(198, 18, 1, byte(i))
		attacker.Send(t, testbed.IPv4UDP(macA, d.tapMAC, src, tapIP, 40000, 9, nil))
	}
	time.Sleep(200 * time.Millisecond)
	ns, _, port, _ := d.socat(t, victimIP.String()+"/16")
	if ok, out := ns.Ping(t, tapIP.String(), 2); !ok {
		t.Errorf("HOLE: after one client used 64 addresses, a new client cannot reach the host (drops %v):\n%s",
			drops(d.counters(t, port)), out)
	}
}

// TestDroppedFrameBindsNothing: a frame the engine drops because its
// source MAC is live on another port (src-mac-in-use) or over --port-macs
// once bound its source address anyway, to the spoofed MAC on the
// attacker's port, and the address was lost to its rightful users until
// the binding aged out. The engine's MAC rules now run before binding.
func TestDroppedFrameBindsNothing(t *testing.T) {
	d := startDaemon(t)
	victim, _, port, victimMAC := d.socat(t, victimIP.String()+"/16")
	if ok, out := victim.Ping(t, tapIP.String(), 1); !ok {
		t.Fatalf("the victim cannot ping the host:\n%s", out)
	}
	attacker, aport := d.connect(t)
	attacker.Send(t, testbed.IPv4UDP(victimMAC, d.tapMAC, freshIP, tapIP, 40000, 9, nil))
	time.Sleep(100 * time.Millisecond)
	if got := drops(d.counters(t, aport)); got["src-mac-in-use"] != 1 {
		t.Fatalf("the attacker's frame from the victim's MAC was not dropped as src-mac-in-use: %v", got)
	}
	// The victim takes the free address the dropped frame named.
	victim.Run(t, "ip", "addr", "add", freshIP.String()+"/16", "dev", testbed.ClientTap)
	if out, err := victim.Try("ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-I", freshIP.String(), tapIP.String()); err != nil {
		t.Errorf("HOLE: the victim cannot use %v, bound by the attacker's dropped frame (victim's drops %v):\n%s",
			freshIP, drops(d.counters(t, port)), out)
	}
}
