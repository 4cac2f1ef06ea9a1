package testbed

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Broadcast is the Ethernet broadcast address.
var Broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// MAC returns the locally administered unicast address 02:00:00:00:00:<last>, so test
// MACs never collide with a real NIC's.
func MAC(last byte) [6]byte { return [6]byte{0x02, 0, 0, 0, 0, last} }

// EthernetFrame returns dst, src, the ethertype and payload, as on the wire. It does
// not pad to the 60-byte minimum, so tests can build runts; the gopacket builders
// below do pad, as a NIC would.
func EthernetFrame(dst, src [6]byte, etherType uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f, dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], etherType)
	return append(f, payload...)
}

// ARPRequest returns a broadcast ARP request from srcMAC/srcIP asking for targetIP.
// The builders panic on an address that is not IPv4: that is a bug in the test.
func ARPRequest(srcMAC [6]byte, srcIP, targetIP netip.Addr) []byte {
	return arpFrame(layers.ARPRequest, srcMAC, Broadcast, srcMAC, srcIP, [6]byte{}, targetIP)
}

// ARPReply returns the reply of srcMAC/srcIP to an ARP request from dstMAC/dstIP.
func ARPReply(srcMAC, dstMAC [6]byte, srcIP, dstIP netip.Addr) []byte {
	return arpFrame(layers.ARPReply, srcMAC, dstMAC, srcMAC, srcIP, dstMAC, dstIP)
}

func arpFrame(op uint16, ethSrc, ethDst, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) []byte {
	return serialize(
		&layers.Ethernet{SrcMAC: ethSrc[:], DstMAC: ethDst[:], EthernetType: layers.EthernetTypeARP},
		&layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
			SourceHwAddress: sha[:], SourceProtAddress: ip4(spa),
			DstHwAddress: tha[:], DstProtAddress: ip4(tpa),
		})
}

// IPv4UDP returns a UDP datagram in an IPv4 packet in an Ethernet frame, with valid
// checksums.
func IPv4UDP(srcMAC, dstMAC [6]byte, srcIP, dstIP netip.Addr, sport, dport uint16, payload []byte) []byte {
	ip := ipv4Header(layers.IPProtocolUDP, srcIP, dstIP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		panic(err)
	}
	return serialize(ethIPv4(srcMAC, dstMAC), ip, udp, gopacket.Payload(payload))
}

// ICMPEcho returns an ICMP echo request (what ping sends).
func ICMPEcho(srcMAC, dstMAC [6]byte, srcIP, dstIP netip.Addr, id, seq uint16, payload []byte) []byte {
	return icmpEcho(layers.ICMPv4TypeEchoRequest, srcMAC, dstMAC, srcIP, dstIP, id, seq, payload)
}

// ICMPEchoReply returns an ICMP echo reply; a reply carries the request's id, seq and
// payload.
func ICMPEchoReply(srcMAC, dstMAC [6]byte, srcIP, dstIP netip.Addr, id, seq uint16, payload []byte) []byte {
	return icmpEcho(layers.ICMPv4TypeEchoReply, srcMAC, dstMAC, srcIP, dstIP, id, seq, payload)
}

func icmpEcho(typ uint8, srcMAC, dstMAC [6]byte, srcIP, dstIP netip.Addr, id, seq uint16, payload []byte) []byte {
	return serialize(ethIPv4(srcMAC, dstMAC), ipv4Header(layers.IPProtocolICMPv4, srcIP, dstIP),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: id, Seq: seq},
		gopacket.Payload(payload))
}

func ethIPv4(src, dst [6]byte) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: src[:], DstMAC: dst[:], EthernetType: layers.EthernetTypeIPv4}
}

func ipv4Header(proto layers.IPProtocol, src, dst netip.Addr) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: ip4(src), DstIP: ip4(dst)}
}

func ip4(a netip.Addr) net.IP {
	if !a.Is4() {
		panic(fmt.Sprintf("testbed: %v is not an IPv4 address", a))
	}
	b := a.As4()
	return b[:]
}

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("testbed: building a frame: %v", err))
	}
	return buf.Bytes()
}
