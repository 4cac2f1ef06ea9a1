//go:build linux

package secure

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vknetd/vknetd/internal/testbed"
)

// TestRogueDHCPServerIsRefused is issue 7's finding 9 as a tenant would
// meet it: a VM runs a DHCP server (dnsmasq, from its own valid address,
// handing out 198.18.1.50-99 with itself as gateway and resolver) next to
// the host's. Its offers used to be flooded to every client; now only the
// host's reach them, so a new VM always leases from the host's range
// (dhcpClient fails on any other), and the rogue's port counts its answers
// as dhcp-server drops.
func TestRogueDHCPServerIsRefused(t *testing.T) {
	testbed.RequireTool(t, "dnsmasq", "busybox")
	d := startDaemon(t)
	startDnsmasq(t, d)
	observer, _ := d.connect(t)

	rogue, _, roguePort, rogueMAC := d.socat(t, ownIP.String()+"/16")
	dir := t.TempDir()
	rogue.Start(t, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface="+testbed.ClientTap, "--bind-interfaces", "--dhcp-authoritative", "--no-ping",
		"--dhcp-range=198.18.1.50,198.18.1.99,255.255.0.0",
		"--dhcp-option=3,"+ownIP.String(), "--dhcp-option=6,"+ownIP.String(),
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--log-dhcp")

	_, victimPort, _, lease := dhcpClient(t, d)
	t.Logf("the victim leased %v from the host", lease)
	if dr := drops(d.counters(t, victimPort)); len(dr) != 0 {
		t.Errorf("the victim's DHCP frames were dropped: %v", dr)
	}

	// The rogue saw the victim's broadcast discover and answered it: its
	// answers are counted, so the test did test something.
	var got map[string]int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got = drops(d.counters(t, roguePort))
		if got["dhcp-server"]+got[kernelFilter] > 0 || time.Now().After(deadline) {
			break
		}
	}
	if got["dhcp-server"]+got[kernelFilter] == 0 {
		t.Errorf("the rogue server's answers were not counted as dhcp-server (or kernel-filter) drops (drops %v); did it answer?\n%s",
			got, d.p.Output())
	}
	// The observer gets what is flooded, the victim's discover included,
	// and nothing the rogue sent from its server port.
	for {
		f, err := observer.Recv(300 * time.Millisecond)
		if err != nil {
			break
		}
		if bytes.Equal(f[6:12], rogueMAC[:]) && isUDPFrom(f, 67) {
			t.Errorf("HOLE: the rogue's DHCP server message reached another client:\n%s", hex.EncodeToString(f))
		}
	}
}

// isUDPFrom reports an untagged IPv4 UDP frame from port sport.
func isUDPFrom(f []byte, sport layers.UDPPort) bool {
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	return ok && u.SrcPort == sport
}

// TestClientIPv6RouterMessagesAreRefused: with --ipv6, a client's router
// advertisements (with or without extension headers in front), redirects
// and DHCPv6 server and relay messages reach neither another client nor
// the TAP, each counted under its reason, while its router solicitation,
// DHCPv6 solicit and echo pass.
func TestClientIPv6RouterMessagesAreRefused(t *testing.T) {
	d := startDaemon(t, "--ipv6", "2001:2::1/64")
	tapCap := startCapture(t, d.ns, tapName)
	attacker, aport := d.connect(t)
	observer, _ := d.connect(t)
	obsMAC := testbed.MAC(0xb1)
	obsLL := net.ParseIP("fe80::b1")
	allRouters, dhcpAgents := net.ParseIP("ff02::2"), net.ParseIP("ff02::1:2")
	// The observer's MAC is learned, so frames to it are unicast.
	observer.Send(t, icmp6(obsMAC, mcast6(allNodes), obsLL, allNodes, layers.ICMPv6TypeEchoRequest, nil, legitMark(99)))
	time.Sleep(100 * time.Millisecond)
	attacker.Drain(100 * time.Millisecond)

	sllA := layers.ICMPv6Option{Type: layers.ICMPv6OptSourceAddress, Data: macA[:]}
	// Neighbour discovery carries the marks in options of an experimental
	// type (253), so the messages stay well formed.
	raBody := func(m []byte) []byte {
		return serializeOnly(&layers.ICMPv6RouterAdvertisement{HopLimit: 64, RouterLifetime: 1800,
			Options: layers.ICMPv6Options{sllA, markOpt(m)}})
	}
	redirectBody := func(m []byte) []byte {
		b := append(make([]byte, 4), ll6.To16()...) // reserved, target: the attacker
		b = append(b, net.ParseIP("2001:2::1").To16()...)
		return append(b, serializeOnly(&layers.ICMPv6RouterSolicitation{Options: layers.ICMPv6Options{markOpt(m)}})[4:]...)
	}
	rogue := []struct {
		name, reason string
		frame        func(dst [6]byte, m []byte) []byte
	}{
		{"router advertisement", "nd-router-advert", func(dst [6]byte, m []byte) []byte {
			return icmp6(macA, dst, ll6, allNodes, layers.ICMPv6TypeRouterAdvertisement, nil, raBody(m))
		}},
		{"router advertisement behind destination options", "nd-router-advert", func(dst [6]byte, m []byte) []byte {
			return icmp6(macA, dst, ll6, allNodes, layers.ICMPv6TypeRouterAdvertisement,
				[]byte{byte(layers.IPProtocolICMPv6), 0, 1, 4, 0, 0, 0, 0}, raBody(m))
		}},
		{"redirect", "nd-redirect", func(dst [6]byte, m []byte) []byte {
			return icmp6(macA, dst, ll6, obsLL, layers.ICMPv6TypeRedirect, nil, redirectBody(m))
		}},
		{"DHCPv6 advertise (547 to 546)", "dhcpv6-server", func(dst [6]byte, m []byte) []byte {
			return udp6(macA, dst, ll6, obsLL, 547, 546, m)
		}},
		{"DHCPv6 relay-forward (547 to 547)", "dhcpv6-server", func(dst [6]byte, m []byte) []byte {
			return udp6(macA, dst, ll6, dhcpAgents, 547, 547, m)
		}},
	}
	want := map[string]int{}
	var marks [][]byte
	for i, r := range rogue {
		for j, dst := range [][6]byte{mcast6(allNodes), obsMAC, d.tapMAC} {
			m := spoofMark(3*i + j)
			attacker.Send(t, r.frame(dst, m))
			marks = append(marks, m)
			want[r.reason]++
		}
	}
	// What a host without an address or router sends passes, after the
	// attack, so its arrival bounds the wait.
	legit := [][]byte{
		icmp6(macA, mcast6(allRouters), ll6, allRouters, layers.ICMPv6TypeRouterSolicitation, nil,
			serializeOnly(&layers.ICMPv6RouterSolicitation{Options: layers.ICMPv6Options{sllA, markOpt(legitMark(0))}})),
		udp6(macA, mcast6(dhcpAgents), ll6, dhcpAgents, 546, 547, legitMark(1)),
		icmp6(macA, mcast6(allNodes), ll6, allNodes, layers.ICMPv6TypeEchoRequest, nil, append([]byte{0, 1, 0, 1}, legitMark(2)...)),
	}
	for _, f := range legit {
		attacker.Send(t, f)
	}

	seen := map[int]bool{}
	for {
		f, err := observer.Recv(500 * time.Millisecond)
		if err != nil {
			break
		}
		for i, m := range marks {
			if bytes.Contains(f, m) {
				t.Errorf("HOLE: the attacker's %s (%s) reached another client:\n%s", rogue[i/3].name, m, hex.EncodeToString(f))
			}
		}
		for i := range legit {
			if bytes.Contains(f, legitMark(i)) {
				seen[i] = true
			}
		}
	}
	for i := range legit {
		if !seen[i] {
			t.Errorf("the attacker's legitimate frame %s did not reach the observer", legitMark(i))
		}
		if !tapCap.waitFor(t, legitMark(i), 3*time.Second) {
			t.Errorf("the attacker's legitimate frame %s did not reach the TAP", legitMark(i))
		}
	}
	for i, m := range marks {
		if n := len(tapCap.containing(t, m)); n > 0 {
			t.Errorf("HOLE: the attacker's %s (%s) reached the TAP", rogue[i/3].name, m)
		}
	}
	if got := drops(d.counters(t, aport)); !sameDrops(got, want) {
		t.Errorf("attacker's drop counters:\n got %v\nwant %v", sortedCounts(got), sortedCounts(want))
	}
}

// markOpt is a neighbour-discovery option of experimental type 253
// carrying mark, padded to its 8-byte units.
func markOpt(mark []byte) layers.ICMPv6Option {
	n := (2+len(mark)+7)/8*8 - 2
	return layers.ICMPv6Option{Type: 253, Data: append(append([]byte(nil), mark...), make([]byte, n-len(mark))...)}
}

// mcast6 is the Ethernet address of an IPv6 multicast group (RFC 2464).
func mcast6(group net.IP) [6]byte {
	g := group.To16()
	return [6]byte{0x33, 0x33, g[12], g[13], g[14], g[15]}
}

// icmp6 is an ICMPv6 message of type typ whose body (after the 4-byte
// header) is body, behind the raw extension headers ext, whose first byte
// must be the next header, ICMPv6's 58, when ext is not empty.
func icmp6(srcMAC, dstMAC [6]byte, src, dst net.IP, typ uint8, ext, body []byte) []byte {
	next := layers.IPProtocolICMPv6
	if len(ext) > 0 {
		next = layers.IPProtocolIPv6Destination
	}
	ip := &layers.IPv6{Version: 6, NextHeader: next, HopLimit: 255, SrcIP: src, DstIP: dst}
	msg := append([]byte{typ, 0, 0, 0}, body...)
	binary.BigEndian.PutUint16(msg[2:], icmp6Checksum(src, dst, msg))
	return build(eth(srcMAC, dstMAC, layers.EthernetTypeIPv6), ip, gopacket.Payload(append(append([]byte(nil), ext...), msg...)))
}

// udp6 is a UDP datagram over IPv6 carrying payload.
func udp6(srcMAC, dstMAC [6]byte, src, dst net.IP, sport, dport layers.UDPPort, payload []byte) []byte {
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 1, SrcIP: src, DstIP: dst}
	u := &layers.UDP{SrcPort: sport, DstPort: dport}
	_ = u.SetNetworkLayerForChecksum(ip)
	return build(eth(srcMAC, dstMAC, layers.EthernetTypeIPv6), ip, u, gopacket.Payload(payload))
}

// icmp6Checksum is the ICMPv6 checksum of msg (checksum field zero) over
// the IPv6 pseudo-header, computed here because the message may sit
// behind extension headers gopacket's ICMPv6 layer would not know of.
func icmp6Checksum(src, dst net.IP, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.To16())
	add(dst.To16())
	sum += uint32(len(msg)) + uint32(layers.IPProtocolICMPv6)
	add(msg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// serializeOnly serializes one ICMPv6 message body (no ICMPv6 header).
func serializeOnly(l gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := l.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		panic(fmt.Sprintf("building a test frame: %v", err))
	}
	return append([]byte(nil), buf.Bytes()...)
}
