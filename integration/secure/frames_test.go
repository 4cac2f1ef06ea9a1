//go:build linux

package secure

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vknetd/vknetd/internal/testbed"
)

// The frames are built with gopacket's serializers (testbed's builders, and
// those below where testbed has none), not with the daemon's decoder, and
// broken afterwards by patching bytes where a class needs a malformed
// header: the daemon must judge them without help from the code that made
// them.

// build serializes layers with lengths and checksums filled in, padded to
// Ethernet's 60-byte minimum.
func build(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("building a test frame: %v", err))
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(src, dst [6]byte, typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: src[:], DstMAC: dst[:], EthernetType: typ}
}

func ip4(a netip.Addr) net.IP { b := a.As4(); return b[:] }

func ipv4(proto layers.IPProtocol, src, dst netip.Addr) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 0x5eed, Protocol: proto, SrcIP: ip4(src), DstIP: ip4(dst)}
}

// dhcp4 is a DHCP discover from a client with no address yet, its own
// MAC as chaddr, carrying payload in a message option (56).
func dhcp4(srcMAC [6]byte, payload []byte) []byte {
	ip := ipv4(layers.IPProtocolUDP, zeroIP, allOnes)
	u := &layers.UDP{SrcPort: 68, DstPort: 67}
	_ = u.SetNetworkLayerForChecksum(ip)
	d := &layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6,
		Xid: 0x1d, ClientHWAddr: srcMAC[:],
		Options: layers.DHCPOptions{
			layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(layers.DHCPMsgTypeDiscover)}),
			layers.NewDHCPOption(layers.DHCPOptMessage, payload),
		}}
	return build(eth(srcMAC, testbed.Broadcast, layers.EthernetTypeIPv4), ip, u, d)
}

// tcp4 is a TCP SYN carrying payload.
func tcp4(srcMAC, dstMAC [6]byte, src, dst netip.Addr, payload []byte) []byte {
	ip := ipv4(layers.IPProtocolTCP, src, dst)
	tc := &layers.TCP{SrcPort: 40000, DstPort: 22, Seq: 1, SYN: true, Window: 1024}
	_ = tc.SetNetworkLayerForChecksum(ip)
	return build(eth(srcMAC, dstMAC, layers.EthernetTypeIPv4), ip, tc, gopacket.Payload(payload))
}

// icmpID is the identifier of the tests' echo requests.
const icmpID = 0x7e57

// arp is an ARP packet; trailer follows it in the frame, where a NIC's
// padding would be, and carries the test's marker.
func arp(op uint16, ethSrc, ethDst, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr, trailer []byte) []byte {
	return build(eth(ethSrc, ethDst, layers.EthernetTypeARP),
		&layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
			SourceHwAddress: sha[:], SourceProtAddress: ip4(spa),
			DstHwAddress: tha[:], DstProtAddress: ip4(tpa),
		}, gopacket.Payload(trailer))
}

// ipHeader returns the IPv4 header of an untagged frame, for patching.
func ipHeader(f []byte) []byte { return f[14:] }

// fixIPv4Checksum recomputes the header checksum of an untagged frame
// after a patch, so that the patched field is the frame's only fault.
func fixIPv4Checksum(f []byte) []byte {
	h := ipHeader(f)
	n := int(h[0]&0x0f) * 4
	if n < 20 {
		n = 20
	}
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < n; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return f
}

// patch applies fn to the frame's IPv4 header and fixes the checksum.
func patch(f []byte, fn func(h []byte)) []byte {
	fn(ipHeader(f))
	return fixIPv4Checksum(f)
}

// payloadOnly4 is an IPv4 packet of protocol proto whose transport part is
// exactly l4 (so it may be too short for its header), with trailer after
// the datagram's end: the frame is long enough, the datagram is not.
func payloadOnly4(srcMAC, dstMAC [6]byte, proto layers.IPProtocol, src, dst netip.Addr, l4, trailer []byte) []byte {
	f := build(eth(srcMAC, dstMAC, layers.EthernetTypeIPv4), ipv4(proto, src, dst), gopacket.Payload(l4))
	return append(f, trailer...)
}

func ipAt(a, b, c, d byte) netip.Addr { return netip.AddrFrom4([4]byte{a, b, c, d}) }

// dhcpReply is a DHCP server message (BOOTREPLY of type msg) from src:sport
// to dst:dport that offers 198.18.0.99 with src as gateway and resolver:
// what a rogue server hands its victims. mark goes in a message option.
func dhcpReply(srcMAC, dstMAC [6]byte, src, dst netip.Addr, sport, dport layers.UDPPort, msg layers.DHCPMsgType, mark []byte) []byte {
	ip := ipv4(layers.IPProtocolUDP, src, dst)
	u := &layers.UDP{SrcPort: sport, DstPort: dport}
	_ = u.SetNetworkLayerForChecksum(ip)
	d := &layers.DHCPv4{Operation: layers.DHCPOpReply, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6,
		Xid: 0x1d, YourClientIP: ip4(ipAt(198, 18, 0, 99)), ClientHWAddr: dstMAC[:],
		Options: layers.DHCPOptions{
			layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(msg)}),
			layers.NewDHCPOption(layers.DHCPOptServerID, ip4(src)),
			layers.NewDHCPOption(layers.DHCPOptRouter, ip4(src)),
			layers.NewDHCPOption(layers.DHCPOptDNS, ip4(src)),
			layers.NewDHCPOption(layers.DHCPOptMessage, mark),
		}}
	return build(eth(srcMAC, dstMAC, layers.EthernetTypeIPv4), ip, u, d)
}

// icmp4 is an ICMP message of type typ (code 1) carrying mark; for a
// redirect the 4 bytes after the checksum are the gateway, here src.
func icmp4(srcMAC, dstMAC [6]byte, src, dst netip.Addr, typ uint8, mark []byte) []byte {
	g := src.As4()
	return build(eth(srcMAC, dstMAC, layers.EthernetTypeIPv4), ipv4(layers.IPProtocolICMPv4, src, dst),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 1),
			Id: binary.BigEndian.Uint16(g[0:2]), Seq: binary.BigEndian.Uint16(g[2:4])},
		gopacket.Payload(mark))
}
