package secure

import (
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// ruleCase is one frame and the verdicts expected for it. When want is a
// drop, ToTap must repeat it; when want is Pass, ToTap must return tap.
type ruleCase struct {
	name  string
	ipv6  bool   // policy with --ipv6 2001:db8::1/64
	prior []byte // sent first from port B (MAC B), must pass
	port  uint32 // 0: portA
	frame []byte
	want  Reason
	tap   Reason
}

func ruleCases() []ruleCase {
	tcpA := tcpFrame(macA, ipA, tapIP)
	dhcp := dhcpFrame(macA, macA, "0.0.0.0", layers.DHCPMsgTypeDiscover, &macA)
	na := naFrame(macA, llA, llA, llOpt(layers.ICMPv6OptTargetAddress, macA))
	ns := nsFrame(macA, llA, "fe80::1", llOpt(layers.ICMPv6OptSourceAddress, macA))
	echoICMP6 := icmp6Bytes(icmp6(layers.ICMPv6TypeEchoRequest), &layers.ICMPv6Echo{Identifier: 1}, gopacket.Payload("x"))
	naBody := func(m [6]byte) []byte {
		return icmp6Bytes(icmp6(layers.ICMPv6TypeNeighborAdvertisement),
			&layers.ICMPv6NeighborAdvertisement{TargetAddress: ip(llA), Options: []layers.ICMPv6Option{llOpt(layers.ICMPv6OptTargetAddress, m)}})
	}
	nsBody := icmp6Bytes(icmp6(layers.ICMPv6TypeNeighborSolicitation), &layers.ICMPv6NeighborSolicitation{TargetAddress: ip(llA)})
	routerAlert := serialize(ether(macA, tapMAC, layers.EthernetTypeIPv4),
		&layers.IPv4{Version: 4, TTL: 1, Protocol: layers.IPProtocolUDP, SrcIP: ip(ipA), DstIP: ip(tapIP),
			Options: []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}},
		&layers.UDP{SrcPort: 1, DstPort: 2})
	tooManyExt := []byte{}
	for i := 0; i < maxExtHeaders+1; i++ {
		tooManyExt = append(tooManyExt, destOpts(layers.IPProtocolIPv6Destination)...)
	}
	tooManyExt[len(tooManyExt)-8] = byte(layers.IPProtocolICMPv6)

	return []ruleCase{
		// Source MAC.
		{name: "unicast source MAC", frame: tcpA, want: Pass},
		{name: "multicast source MAC", frame: tcpFrame(mac("01:00:5e:00:00:01"), ipA, tapIP), want: SrcMACMulticast},
		{name: "broadcast source MAC", frame: tcpFrame(bcast, ipA, tapIP), want: SrcMACMulticast},
		{name: "zero source MAC", frame: tcpFrame([6]byte{}, ipA, tapIP), want: SrcMACZero},
		{name: "TAP's MAC as source", frame: tcpFrame(tapMAC, ipA, tapIP), want: SrcMACTap},
		{name: "runt frame", frame: tcpA[:13], want: Truncated},

		// VLAN tags.
		{name: "untagged IPv4", frame: icmpFrame(macA, ipA, tapIP), want: Pass},
		{name: "802.1Q tagged legit IPv4", frame: vlanFrame(layers.EthernetTypeDot1Q, icmpFrame(macA, ipA, tapIP)), want: VLANTagged},
		{name: "802.1Q tagged spoofed IPv4", frame: vlanFrame(layers.EthernetTypeDot1Q, icmpFrame(macA, "10.0.0.1", tapIP)), want: VLANTagged},
		{name: "802.1ad tagged", frame: vlanFrame(layers.EthernetTypeQinQ, icmpFrame(macA, ipA, tapIP)), want: VLANTagged},

		// ARP.
		{name: "ARP request", frame: arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP), want: Pass},
		{name: "ARP reply", frame: arpFrame(macA, layers.ARPReply, macA, ipA, tapIP), want: Pass},
		{name: "ARP sender MAC not the source", frame: arpFrame(macA, layers.ARPReply, macB, ipA, tapIP), want: ARPSenderMismatch},
		{name: "ARP sender IP outside CIDR", frame: arpFrame(macA, layers.ARPReply, macA, "10.0.0.1", tapIP), want: ARPSenderOutside},
		{name: "ARP sender IP broadcast of CIDR", frame: arpFrame(macA, layers.ARPReply, macA, "198.18.255.255", tapIP), want: ARPSenderOutside},
		{name: "ARP sender IP network of CIDR", frame: arpFrame(macA, layers.ARPRequest, macA, "198.18.0.0", tapIP), want: ARPSenderOutside},
		{name: "ARP probe", frame: arpFrame(macA, layers.ARPRequest, macA, "0.0.0.0", ipA), want: Pass},
		{name: "ARP reply from 0.0.0.0", frame: arpFrame(macA, layers.ARPReply, macA, "0.0.0.0", ipA), want: ARPSenderOutside},
		{name: "ARP claiming the TAP's IP", frame: arpFrame(macA, layers.ARPReply, macA, tapIP, tapIP), want: TapAddrClaimed},
		{name: "ARP with IPv6 protocol type", frame: mutate(arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP), func(b []byte) []byte { b[16] = 0x86; b[17] = 0xdd; return b }), want: ARPMalformed},
		{name: "ARP with 16-byte protocol addresses", frame: mutate(arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP), func(b []byte) []byte { b[19] = 16; return b }), want: ARPMalformed},
		{name: "ARP hardware type not Ethernet", frame: mutate(arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP), func(b []byte) []byte { b[15] = 6; return b }), want: ARPMalformed},
		{name: "ARP operation 3 (RARP)", frame: mutate(arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP), func(b []byte) []byte { b[21] = 3; return b }), want: ARPMalformed},
		{name: "ARP cut in the addresses", frame: arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP)[:14+20], want: Truncated},
		{name: "ARP cut in the header", frame: arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP)[:14+6], want: Truncated},

		// IPv4 header validity.
		{name: "IPv4 with router-alert option", frame: routerAlert, want: Pass},
		{name: "IPv4 version 5", frame: setIPv4(tcpA, 0, 0x55), want: IPv4Malformed},
		{name: "IPv4 header length 4 words", frame: setIPv4(tcpA, 0, 0x44), want: IPv4Malformed},
		{name: "IPv4 total length shorter than header", frame: setIPv4(tcpA, 2, 0, 19), want: IPv4Malformed},
		{name: "IPv4 total length 0 (no TSO from clients)", frame: setIPv4(tcpA, 2, 0, 0), want: IPv4Malformed},
		{name: "IPv4 total length past the frame", frame: setIPv4(tcpA, 2, 0x05, 0xdc), want: Truncated},
		{name: "IPv4 header length past the frame", frame: setIPv4(setIPv4(tcpA[:14+30], 0, 0x4f), 2, 0, 60), want: Truncated},
		{name: "IPv4 header cut", frame: tcpA[:14+19], want: Truncated},
		{name: "IPv4 header checksum wrong", frame: setIPv4(tcpA, 10, tcpA[14+10]^0x40), want: IPv4BadChecksum},
		{name: "IPv4 source changed after checksumming", frame: setIPv4(tcpA, 15, 19), want: IPv4BadChecksum},
		{name: "IPv4 total length fixed up with checksum", frame: fixIPv4Checksum(setIPv4(tcpA, 2, 0, 44)), want: Pass},
		{name: "IPv4 option of length 1", frame: setIPv4(routerAlert, 21, 1), want: IPv4Malformed},
		{name: "IPv4 option past the header", frame: setIPv4(routerAlert, 21, 5), want: IPv4Malformed},

		// IPv4 source.
		{name: "IPv4 source outside CIDR", frame: tcpFrame(macA, "10.0.0.1", tapIP), want: IPv4SrcOutside},
		{name: "ICMP from outside CIDR", frame: icmpFrame(macA, "10.0.0.1", tapIP), want: IPv4SrcOutside},
		{name: "IPv4 source broadcast of CIDR", frame: icmpFrame(macA, "198.18.255.255", tapIP), want: IPv4SrcOutside},
		{name: "IPv4 source network of CIDR", frame: icmpFrame(macA, "198.18.0.0", tapIP), want: IPv4SrcOutside},
		{name: "IPv4 source the TAP's address", frame: icmpFrame(macA, tapIP, ipB), want: TapAddrClaimed},
		{name: "later fragment from inside", frame: fragFrame(macA, ipA, layers.IPProtocolUDP, 0, 185, []byte{1, 2, 3, 4}), want: Pass},
		{name: "later fragment from outside", frame: fragFrame(macA, "10.0.0.1", layers.IPProtocolUDP, 0, 185, []byte{1, 2, 3, 4}), want: IPv4SrcOutside},
		{name: "DHCP discover from 0.0.0.0", frame: dhcp, want: Pass},
		{name: "DHCP for another client's hardware address", frame: dhcpFrame(macA, macB, "0.0.0.0", layers.DHCPMsgTypeDiscover, nil), want: DHCPClientMismatch},
		{name: "DHCP with another client's Ethernet client-id", frame: dhcpFrame(macA, macA, "0.0.0.0", layers.DHCPMsgTypeRequest, &macB), want: DHCPClientMismatch},
		{name: "DHCP release in another client's name from a bound address", prior: tcpFrame(macB, ipB, tapIP), port: portB,
			frame: dhcpFrame(macB, macA, ipB, layers.DHCPMsgTypeRelease, &macA), want: DHCPClientMismatch},
		{name: "DHCP release from a bound address", prior: tcpFrame(macB, ipB, tapIP), port: portB,
			frame: dhcpFrame(macB, macB, ipB, layers.DHCPMsgTypeRelease, &macB), want: Pass},
		{name: "UDP 68->67 that is not BOOTP", frame: udpFrame(macA, "0.0.0.0", "255.255.255.255", 68, 67), want: DHCPMalformed},
		{name: "UDP 68->68 from 0.0.0.0", frame: udpFrame(macA, "0.0.0.0", "255.255.255.255", 68, 68), want: IPv4ZeroSrcNotDHCP},
		{name: "UDP 67->68 from 0.0.0.0", frame: udpFrame(macA, "0.0.0.0", "255.255.255.255", 67, 68), want: IPv4ZeroSrcNotDHCP},
		{name: "TCP from 0.0.0.0", frame: tcpFrame(macA, "0.0.0.0", tapIP), want: IPv4ZeroSrcNotDHCP},
		{name: "ICMP from 0.0.0.0", frame: icmpFrame(macA, "0.0.0.0", tapIP), want: IPv4ZeroSrcNotDHCP},
		{name: "fragmented DHCP from 0.0.0.0", frame: fragFrame(macA, "0.0.0.0", layers.IPProtocolUDP, layers.IPv4MoreFragments, 0,
			[]byte{0, 68, 0, 67, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}), want: IPv4ZeroSrcNotDHCP},

		// Only the host side serves DHCP and advertises routers.
		{name: "DHCP offer from a client's own address", frame: dhcpReplyFrame(macA, ipA, "255.255.255.255", 67, 68, layers.DHCPMsgTypeOffer), want: DHCPServer},
		{name: "DHCP ack unicast to another client", frame: dhcpReplyFrame(macA, ipA, ipB, 67, 68, layers.DHCPMsgTypeAck), want: DHCPServer},
		{name: "DHCP offer to the TAP", frame: dhcpReplyFrame(macA, ipA, tapIP, 67, 68, layers.DHCPMsgTypeOffer), want: DHCPServer},
		{name: "DHCP relayed to a server (67 to 67)", frame: udpFrame(macA, ipA, tapIP, 67, 67), want: DHCPServer},
		{name: "UDP to port 68 from another port", frame: udpFrame(macA, ipA, ipB, 5000, 68), want: DHCPServer},
		{name: "UDP from port 67 to another port", frame: udpFrame(macA, ipA, ipB, 67, 5000), want: DHCPServer},
		{name: "DHCP offer from 0.0.0.0", frame: dhcpReplyFrame(macA, "0.0.0.0", "255.255.255.255", 67, 68, layers.DHCPMsgTypeOffer), want: IPv4ZeroSrcNotDHCP},
		{name: "DHCP offer from outside the CIDR", frame: dhcpReplyFrame(macA, "10.0.0.1", "255.255.255.255", 67, 68, layers.DHCPMsgTypeOffer), want: IPv4SrcOutside},
		{name: "DHCP offer in a first fragment", frame: fragFrame(macA, ipA, layers.IPProtocolUDP, layers.IPv4MoreFragments, 0,
			udpBytes(67, 68, make([]byte, 240))), want: DHCPServer},
		{name: "DHCP offer in a first fragment without its whole UDP header", frame: fragFrame(macA, ipA, layers.IPProtocolUDP, layers.IPv4MoreFragments, 0,
			[]byte{0, 67, 0, 68}), want: Truncated},
		{name: "later fragment of a DHCP offer (no ports to judge)", frame: fragFrame(macA, ipA, layers.IPProtocolUDP, 0, 1,
			udpBytes(67, 68, make([]byte, 16))), want: Pass, tap: Pass},
		{name: "DHCP request from a bound address", prior: tcpFrame(macB, ipB, tapIP), port: portB,
			frame: dhcpFrame(macB, macB, ipB, layers.DHCPMsgTypeRequest, &macB), want: Pass, tap: Pass},
		{name: "ICMP redirect", frame: icmp4Frame(macA, ipA, ipB, 5), want: ICMPRedirect},
		{name: "ICMP redirect to the TAP", frame: icmp4Frame(macA, ipA, tapIP, 5), want: ICMPRedirect},
		{name: "ICMP redirect from outside the CIDR", frame: icmp4Frame(macA, "10.0.0.1", ipB, 5), want: IPv4SrcOutside},
		{name: "ICMP router advertisement", frame: icmp4Frame(macA, ipA, "224.0.0.1", 9), want: ICMPRouterAdvert},
		{name: "ICMP router solicitation", frame: icmp4Frame(macA, ipA, "224.0.0.2", 10), want: Pass, tap: Pass},
		{name: "ICMP redirect in a first fragment", frame: fragFrame(macA, ipA, layers.IPProtocolICMPv4, layers.IPv4MoreFragments, 0,
			[]byte{5, 1, 0, 0, 198, 18, 0, 10}), want: ICMPRedirect},
		{name: "RA with own source link-layer address", ipv6: true, frame: raFrame(macA, llA, llOpt(layers.ICMPv6OptSourceAddress, macA)), want: NDRouterAdvert},
		{name: "RA without options", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolICMPv6, nil, raBody()), want: NDRouterAdvert},
		{name: "RA behind destination options", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolIPv6Destination,
			destOpts(layers.IPProtocolICMPv6), raBody()), want: NDRouterAdvert},
		{name: "RA behind hop-by-hop and destination options", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolIPv6HopByHop,
			append(hopByHopRouterAlert(layers.IPProtocolIPv6Destination), destOpts(layers.IPProtocolICMPv6)...), raBody()), want: NDRouterAdvert},
		{name: "RA in a first fragment", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolIPv6Fragment,
			fragHeader(layers.IPProtocolICMPv6, 0, true), raBody()), want: NDMalformed},
		{name: "RA behind a fragment header and destination options", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolIPv6Fragment,
			append(fragHeader(layers.IPProtocolIPv6Destination, 0, true), destOpts(layers.IPProtocolICMPv6)...), raBody()), want: IPv6Malformed},
		{name: "UDP behind a fragment header and destination options (overlap bait)", ipv6: true, frame: ext6Frame(macA, llA, "fe80::b", layers.IPProtocolIPv6Fragment,
			append(fragHeader(layers.IPProtocolIPv6Destination, 0, true), destOpts(layers.IPProtocolUDP)...), udpBytes(5000, 53, make([]byte, 16))), want: IPv6Malformed},
		{name: "UDP behind destination options and a fragment header", ipv6: true, frame: ext6Frame(macA, llA, "fe80::b", layers.IPProtocolIPv6Destination,
			append(destOpts(layers.IPProtocolIPv6Fragment), fragHeader(layers.IPProtocolUDP, 0, true)...), udpBytes(5000, 53, make([]byte, 16))), want: Pass, tap: Pass},
		{name: "TCP behind a fragment header and destination options", ipv6: true, frame: ext6Frame(macA, llA, tap6, layers.IPProtocolIPv6Fragment,
			append(fragHeader(layers.IPProtocolIPv6Destination, 0, true), destOpts(layers.IPProtocolTCP)...), append(make([]byte, 12), 0x50, 0, 0, 0, 0, 0, 0, 0)), want: Pass, tap: Pass},
		{name: "RA from outside the prefix", ipv6: true, frame: ext6Frame(macA, "2001:db9::a", allND, layers.IPProtocolICMPv6, nil, raBody()), want: IPv6SrcOutside},
		{name: "ICMPv6 redirect", ipv6: true, frame: ext6Frame(macA, llA, "fe80::b", layers.IPProtocolICMPv6, nil, redirect6Body()), want: NDRedirect},
		{name: "ICMPv6 redirect behind destination options", ipv6: true, frame: ext6Frame(macA, llA, "fe80::b", layers.IPProtocolIPv6Destination,
			destOpts(layers.IPProtocolICMPv6), redirect6Body()), want: NDRedirect},
		{name: "DHCPv6 solicit (546 to 547)", ipv6: true, frame: ext6Frame(macA, llA, "ff02::1:2", layers.IPProtocolUDP, nil,
			udpBytes(546, 547, []byte{1, 0, 0, 1})), want: Pass, tap: Pass},
		{name: "DHCPv6 advertise (547 to 546)", ipv6: true, frame: ext6Frame(macA, llA, llA, layers.IPProtocolUDP, nil,
			udpBytes(547, 546, []byte{2, 0, 0, 1})), want: DHCPv6Server},
		{name: "DHCPv6 relay-forward (547 to 547)", ipv6: true, frame: ext6Frame(macA, llA, "ff02::1:2", layers.IPProtocolUDP, nil,
			udpBytes(547, 547, []byte{12, 0})), want: DHCPv6Server},
		{name: "UDP to port 546 from another port", ipv6: true, frame: ext6Frame(macA, ip6A, "ff02::1:2", layers.IPProtocolUDP, nil,
			udpBytes(5000, 546, []byte{7})), want: DHCPv6Server},
		{name: "DHCPv6 reply behind destination options", ipv6: true, frame: ext6Frame(macA, llA, "fe80::b", layers.IPProtocolIPv6Destination,
			destOpts(layers.IPProtocolUDP), udpBytes(547, 546, []byte{7, 0, 0, 1})), want: DHCPv6Server},
		{name: "DHCPv6 reply in a first fragment", ipv6: true, frame: ext6Frame(macA, llA, "fe80::b", layers.IPProtocolIPv6Fragment,
			fragHeader(layers.IPProtocolUDP, 0, true), udpBytes(547, 546, make([]byte, 32))), want: DHCPv6Server},
		{name: "DHCPv6 reply in a first fragment without its whole UDP header", ipv6: true, frame: ext6Frame(macA, llA, "fe80::b", layers.IPProtocolIPv6Fragment,
			fragHeader(layers.IPProtocolUDP, 0, true), []byte{2, 35, 2, 34}), want: Truncated},

		// Transport headers.
		{name: "TCP header cut", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolTCP, make([]byte, 10)), want: Truncated},
		{name: "TCP data offset 4", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolTCP, append(make([]byte, 12), 0x40, 0, 0, 0, 0, 0, 0, 0)), want: TransportMalformed},
		{name: "TCP data offset past the datagram", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolTCP, append(make([]byte, 12), 0xf0, 0, 0, 0, 0, 0, 0, 0)), want: Truncated},
		{name: "UDP header cut", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolUDP, make([]byte, 6)), want: Truncated},
		{name: "UDP length 4", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolUDP, []byte{0, 1, 0, 2, 0, 4, 0, 0}), want: TransportMalformed},
		{name: "UDP length past the datagram", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolUDP, []byte{0, 1, 0, 2, 0, 40, 0, 0}), want: Truncated},
		{name: "ICMP header cut", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolICMPv4, []byte{8, 0, 0, 0}), want: Truncated},
		{name: "first fragment with TCP header cut", frame: fragFrame(macA, ipA, layers.IPProtocolTCP, layers.IPv4MoreFragments, 0, make([]byte, 8)), want: Truncated},

		// Toward the TAP.
		{name: "TCP to TAP", frame: tcpA, want: Pass, tap: Pass},
		{name: "UDP to TAP", frame: udpFrame(macA, ipA, tapIP, 5000, 53), want: Pass, tap: Pass},
		{name: "GRE to TAP", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolGRE, make([]byte, 8)), want: Pass, tap: TapProtoDenied},
		{name: "IP-in-IP judged by its outer header", frame: ipProtoFrame(macA, ipA, tapIP, layers.IPProtocolIPv4,
			serialize(ip4("10.0.0.1", tapIP, layers.IPProtocolICMPv4), &layers.ICMPv4{})), want: Pass, tap: TapProtoDenied},
		{name: "IP-in-IP with spoofed outer header", frame: ipProtoFrame(macA, "10.0.0.1", tapIP, layers.IPProtocolIPv4,
			serialize(ip4(ipA, tapIP, layers.IPProtocolICMPv4), &layers.ICMPv4{})), want: IPv4SrcOutside},
		{name: "LLDP between clients, not to TAP", frame: serialize(ether(macA, mac("01:80:c2:00:00:0e"), layers.EthernetTypeLinkLayerDiscovery), gopacket.Payload(make([]byte, 46))), want: Pass, tap: TapEtherDenied},
		{name: "RARP announcement to TAP", frame: rarpFrame(macA, 3, macA), want: Pass, tap: Pass},
		{name: "RARP reply, not to TAP", frame: rarpFrame(macA, 4, macA), want: Pass, tap: TapEtherDenied},
		{name: "RARP about another MAC, not to TAP", frame: rarpFrame(macA, 3, macB), want: Pass, tap: TapEtherDenied},
		{name: "RARP cut, not to TAP", frame: rarpFrame(macA, 3, macA)[:40], want: Pass, tap: TapEtherDenied},
		{name: "802.3 length frame, not to TAP", frame: serialize(ether(macA, mac("01:80:c2:00:00:00"), layers.EthernetType(38)), gopacket.Payload(make([]byte, 46))), want: Pass, tap: TapEtherDenied},

		// IPv6.
		{name: "IPv6 without --ipv6", frame: echo6Frame(macA, llA, "fe80::1"), want: IPv6Disabled},
		{name: "IPv6 link-local source", ipv6: true, frame: echo6Frame(macA, llA, "fe80::1"), want: Pass, tap: Pass},
		{name: "IPv6 source in prefix", ipv6: true, frame: udp6Frame(macA, ip6A, tap6), want: Pass, tap: Pass},
		{name: "IPv6 source outside prefix", ipv6: true, frame: echo6Frame(macA, "2001:db9::a", tap6), want: IPv6SrcOutside},
		{name: "IPv6 multicast source", ipv6: true, frame: echo6Frame(macA, "ff02::1", tap6), want: IPv6SrcOutside},
		{name: "IPv6 IPv4-mapped source", ipv6: true, frame: echo6Frame(macA, "::ffff:198.18.0.10", tap6), want: IPv6SrcOutside},
		{name: "IPv6 source the TAP's address", ipv6: true, frame: echo6Frame(macA, tap6, ip6A), want: TapAddrClaimed},
		{name: "IPv6 source the TAP's link-local", ipv6: true, frame: echo6Frame(macA, tapLL6, llA), want: TapAddrClaimed},
		{name: "IPv6 :: source on DAD", ipv6: true, frame: nsFrame(macA, "::", llA), want: Pass, tap: Pass},
		{name: "IPv6 :: source on echo", ipv6: true, frame: echo6Frame(macA, "::", tap6), want: IPv6UnspecifiedSrc},
		{name: "IPv6 :: source on MLDv2 report", ipv6: true, frame: ext6Frame(macA, "::", "ff02::16", layers.IPProtocolIPv6HopByHop,
			hopByHopRouterAlert(layers.IPProtocolICMPv6), mld2Report()), want: Pass, tap: Pass},
		{name: "IPv6 version 4", ipv6: true, frame: mutate(echo6Frame(macA, llA, tap6), func(b []byte) []byte { b[14] = 0x40; return b }), want: IPv6Malformed},
		{name: "IPv6 payload length 0", ipv6: true, frame: mutate(echo6Frame(macA, llA, tap6), func(b []byte) []byte { b[18], b[19] = 0, 0; return b }), want: IPv6Malformed},
		{name: "IPv6 payload length past the frame", ipv6: true, frame: mutate(echo6Frame(macA, llA, tap6), func(b []byte) []byte { b[18] = 5; return b }), want: Truncated},
		{name: "IPv6 header cut", ipv6: true, frame: echo6Frame(macA, llA, tap6)[:14+39], want: Truncated},
		{name: "IPv6 extension header cut", ipv6: true, frame: ext6Frame(macA, llA, tap6, layers.IPProtocolIPv6Destination,
			[]byte{byte(layers.IPProtocolICMPv6), 1, 0, 0, 0, 0, 0, 0}, []byte{128, 0, 0, 0, 0, 0, 0, 0}), want: Truncated},
		{name: "IPv6 extension header chain too long", ipv6: true, frame: ext6Frame(macA, llA, tap6, layers.IPProtocolIPv6Destination,
			tooManyExt, echoICMP6), want: IPv6Malformed},
		{name: "IPv6 UDP header cut", ipv6: true, frame: ext6Frame(macA, llA, tap6, layers.IPProtocolUDP, nil, []byte{0, 1, 0, 2}), want: Truncated},
		{name: "IPv6 UDP length 0", ipv6: true, frame: ext6Frame(macA, llA, tap6, layers.IPProtocolUDP, nil, []byte{0, 1, 0, 2, 0, 0, 0, 0}), want: TransportMalformed},
		{name: "IPv6 GRE to TAP", ipv6: true, frame: ext6Frame(macA, llA, tap6, layers.IPProtocolGRE, nil, make([]byte, 8)), want: Pass, tap: TapProtoDenied},
		{name: "IPv6 later fragment of UDP", ipv6: true, frame: ext6Frame(macA, ip6A, tap6, layers.IPProtocolIPv6Fragment,
			fragHeader(layers.IPProtocolUDP, 100, false), []byte{1, 2, 3}), want: Pass, tap: Pass},
		{name: "IPv6 later fragment from outside", ipv6: true, frame: ext6Frame(macA, "2001:db9::a", tap6, layers.IPProtocolIPv6Fragment,
			fragHeader(layers.IPProtocolUDP, 100, false), []byte{1, 2, 3}), want: IPv6SrcOutside},

		// Neighbour discovery.
		{name: "NA with own target link-layer address", ipv6: true, frame: na, want: Pass, tap: Pass},
		{name: "NA with another's target link-layer address", ipv6: true, frame: naFrame(macA, llA, llA, llOpt(layers.ICMPv6OptTargetAddress, macB)), want: NDTargetMismatch},
		{name: "NA with the TAP's link-layer address", ipv6: true, frame: naFrame(macA, llA, llA, llOpt(layers.ICMPv6OptTargetAddress, tapMAC)), want: NDTargetMismatch},
		{name: "NA target outside prefix", ipv6: true, frame: naFrame(macA, llA, "2001:db9::a", llOpt(layers.ICMPv6OptTargetAddress, macA)), want: NDTargetOutside},
		{name: "NA target the TAP's address", ipv6: true, frame: naFrame(macA, llA, tap6, llOpt(layers.ICMPv6OptTargetAddress, macA)), want: TapAddrClaimed},
		{name: "NA target in prefix", ipv6: true, frame: naFrame(macA, llA, ip6A, llOpt(layers.ICMPv6OptTargetAddress, macA)), want: Pass, tap: Pass},
		{name: "NA behind destination options", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolIPv6Destination,
			destOpts(layers.IPProtocolICMPv6), naBody(macA)), want: Pass, tap: Pass},
		{name: "spoofing NA behind destination options", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolIPv6Destination,
			destOpts(layers.IPProtocolICMPv6), naBody(macB)), want: NDTargetMismatch},
		{name: "NA option of length 0", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolICMPv6, nil,
			append(naBody(macA)[:24], 2, 0, 0, 0, 0, 0, 0, 0)), want: NDMalformed},
		{name: "NA shorter than its fixed part", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolICMPv6, nil,
			naBody(macA)[:12]), want: NDMalformed},
		{name: "fragmented NS", ipv6: true, frame: ext6Frame(macA, llA, allND, layers.IPProtocolIPv6Fragment,
			fragHeader(layers.IPProtocolICMPv6, 0, true), nsBody), want: NDMalformed},
		{name: "NS with own source link-layer address", ipv6: true, frame: ns, want: Pass, tap: Pass},
		{name: "NS with another's source link-layer address", ipv6: true, frame: nsFrame(macA, llA, "fe80::1", llOpt(layers.ICMPv6OptSourceAddress, macB)), want: NDSourceMismatch},
		{name: "RS with own source link-layer address", ipv6: true, frame: rsFrame(macA, llA, llOpt(layers.ICMPv6OptSourceAddress, macA)), want: Pass, tap: Pass},
		{name: "RS with another's source link-layer address", ipv6: true, frame: rsFrame(macA, llA, llOpt(layers.ICMPv6OptSourceAddress, macB)), want: NDSourceMismatch},
		{name: "RA with another's source link-layer address", ipv6: true, frame: raFrame(macA, llA, llOpt(layers.ICMPv6OptSourceAddress, macB)), want: NDSourceMismatch},

		// Bindings: B used the address first.
		{name: "IPv4 source free", frame: tcpFrame(macA, ipB, tapIP), want: Pass},
		{name: "IPv4 source bound to another MAC", prior: tcpFrame(macB, ipB, tapIP), frame: tcpFrame(macA, ipB, tapIP), want: IPBindingConflict},
		{name: "IPv4 source bound to this MAC on another port", prior: tcpFrame(macB, ipB, tapIP), frame: tcpFrame(macB, ipB, tapIP), want: IPBindingConflict},
		{name: "IPv4 source bound to this MAC and port", prior: tcpFrame(macB, ipB, tapIP), port: portB, frame: icmpFrame(macB, ipB, tapIP), want: Pass},
		{name: "ARP sender bound to another MAC", prior: tcpFrame(macB, ipB, tapIP), frame: arpFrame(macA, layers.ARPReply, macA, ipB, tapIP), want: IPBindingConflict},
		{name: "IPv4 source bound by ARP", prior: arpFrame(macB, layers.ARPRequest, macB, ipB, tapIP), frame: tcpFrame(macA, ipB, tapIP), want: IPBindingConflict},
		{name: "ARP probe for a bound address", prior: tcpFrame(macB, ipB, tapIP), frame: arpFrame(macA, layers.ARPRequest, macA, "0.0.0.0", ipB), want: Pass},
		{name: "DHCP while another holds an address", prior: tcpFrame(macB, ipB, tapIP), frame: dhcp, want: Pass},
		{name: "more addresses than --port-ips on one port", ipv6: true, prior: arpFrame(macB, layers.ARPRequest, macB, ipB, tapIP), port: portB,
			frame: naFrame(macB, "fe80::b", "2001:db8::b", llOpt(layers.ICMPv6OptTargetAddress, macB)), want: Pass},
		{name: "IPv6 source bound to another MAC", ipv6: true, prior: udp6Frame(macB, ip6A, tap6), frame: udp6Frame(macA, ip6A, tap6), want: IPBindingConflict},
		{name: "NA target bound to another MAC", ipv6: true, prior: udp6Frame(macB, ip6A, tap6),
			frame: naFrame(macA, llA, ip6A, llOpt(layers.ICMPv6OptTargetAddress, macA)), want: IPBindingConflict},
		{name: "NA target bound by B's NA", ipv6: true, prior: naFrame(macB, "fe80::b", llA, llOpt(layers.ICMPv6OptTargetAddress, macB)),
			frame: echo6Frame(macA, llA, tap6), want: IPBindingConflict},
	}
}

func TestRules(t *testing.T) {
	for _, tc := range ruleCases() {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPolicy(t, testConfig(tc.ipv6))
			c := p.NewChecker()
			if tc.prior != nil {
				if r := c.FromClient(tc.prior, portB, 1); r != Pass {
					t.Fatalf("prior frame: got %v, want pass (%s)", r, c.Describe())
				}
			}
			port := tc.port
			if port == 0 {
				port = portA
			}
			got := c.FromClient(tc.frame, port, 2)
			if got != tc.want {
				t.Fatalf("FromClient = %v, want %v (%s)", got, tc.want, c.Describe())
			}
			wantTap := tc.tap
			if tc.want != Pass {
				wantTap = tc.want
			}
			if got := c.ToTap(); got != wantTap {
				t.Fatalf("ToTap = %v, want %v (%s)", got, wantTap, c.Describe())
			}
		})
	}
}

// TestRulesCoverEveryReason keeps the table honest: every drop reason has a
// frame that triggers it (BindingTableFull and PortBindingLimit need more
// than one prior frame: they are in TestBindingTableFull and
// TestPortBindingLimit; the users' reasons need owners and ranges: they are
// in TestUserBindingLimit and TestUserNets; IPNotLeased needs --ip-source
// dhcp: it is in TestLeaseBindings).
func TestRulesCoverEveryReason(t *testing.T) {
	seen := map[Reason]bool{BindingTableFull: true, PortBindingLimit: true,
		UserBindingLimit: true, IPInOtherUserNet: true, IPOutsideUserNet: true, IPNotLeased: true}
	for _, tc := range ruleCases() {
		seen[tc.want] = true
		seen[tc.tap] = true
	}
	for r := Reason(0); r < NumReasons; r++ {
		if !seen[r] {
			t.Errorf("no rule case produces %v", r)
		}
	}
}

func TestUnsecurePassesEverything(t *testing.T) {
	p := newTestPolicy(t, Config{Secure: false})
	c := p.NewChecker()
	for _, tc := range ruleCases() {
		if r := c.FromClient(tc.frame, portA, 1); r != Pass {
			t.Errorf("%s: FromClient in -U mode = %v", tc.name, r)
		}
		if r := c.ToTap(); r != Pass {
			t.Errorf("%s: ToTap in -U mode = %v", tc.name, r)
		}
	}
	if n := p.Expire(1 << 62); n != 0 {
		t.Errorf("Expire in -U mode released %d bindings", n)
	}
	if p.Secure() {
		t.Error("Secure() true in -U mode")
	}
	if !newTestPolicy(t, testConfig(false)).Secure() {
		t.Error("Secure() false in secure mode")
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]Reason{}
	for r := Reason(0); r < NumReasons; r++ {
		s := r.String()
		if s == "" {
			t.Errorf("reason %d has no name", r)
		}
		for _, ch := range s {
			if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
				t.Errorf("reason %d name %q is not kebab-case", r, s)
				break
			}
		}
		if o, dup := seen[s]; dup {
			t.Errorf("reasons %d and %d share the name %q", o, r, s)
		}
		seen[s] = r
	}
	if got := NumReasons.String(); got != "reason-"+itoa(int(NumReasons)) {
		t.Errorf("out-of-range reason renders as %q", got)
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestDescribe(t *testing.T) {
	c := newTestPolicy(t, testConfig(false)).NewChecker()
	if got := c.Describe(); got != "" {
		t.Errorf("Describe before any frame = %q", got)
	}
	for _, tc := range []struct {
		frame []byte
		want  string
	}{
		{tcpFrame(macA, "10.0.0.1", tapIP), "52:54:00:00:00:0a > 02:00:00:00:00:01 ipv4 10.0.0.1 > 198.18.0.1 proto 6 ports 40000 > 22"},
		{arpFrame(macA, layers.ARPReply, macB, ipA, tapIP), "arp reply sender 198.18.0.10 (52:54:00:00:00:0b) target 198.18.0.1"},
		{echo6Frame(macA, llA, tap6), "ipv6 fe80::5054:ff:fe00:a > 2001:db8::1 next 58"},
		{vlanFrame(layers.EthernetTypeDot1Q, icmpFrame(macA, ipA, tapIP)), "vlan 10 (tag 0x8100) inner ethertype 0x0800"},
		{tcpFrame(macA, ipA, tapIP)[:10], "runt frame of 10 bytes"},
		{tcpFrame(macA, ipA, tapIP)[:20], "ethertype 0x0800 length 20"},
	} {
		c.FromClient(tc.frame, portA, 1)
		if got := c.Describe(); !strings.Contains(got, tc.want) {
			t.Errorf("Describe = %q, want it to contain %q", got, tc.want)
		}
	}
}
