//go:build linux

package secure

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vknetd/vknetd/internal/testbed"
)

// The attacker's own identity: a legitimate address it may use, a second
// MAC (with its own address) that fills its --port-macs 2, and a third
// that exceeds it.
var (
	macA  = testbed.MAC(0xa1)
	macB  = testbed.MAC(0xa2)
	macC  = testbed.MAC(0xa3)
	ownIP = netip.MustParseAddr("198.18.0.10")
	ipB   = netip.MustParseAddr("198.18.0.11")
	ipC   = netip.MustParseAddr("198.18.0.12")
	// freshIP is bound to nobody: a frame from it fails only on its MAC.
	freshIP  = netip.MustParseAddr("198.18.0.20")
	victimIP = netip.MustParseAddr("198.18.0.2")
	// outside is outside 198.18.0.0/16 but inside the benchmarking range.
	outside  = netip.MustParseAddr("198.19.0.5")
	zeroIP   = netip.IPv4Unspecified()
	allOnes  = netip.MustParseAddr("255.255.255.255")
	netAddr  = netip.MustParseAddr("198.18.0.0")
	bcastIP  = netip.MustParseAddr("198.18.255.255")
	noMAC    = [6]byte{}
	mcastMAC = [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
	ll6      = net.ParseIP("fe80::a1")
	allNodes = net.ParseIP("ff02::1")
)

// spoofClass is one kind of frame secure mode must refuse. Each is sent
// twice, to the TAP's MAC and to broadcast, each copy with its own marker.
type spoofClass struct {
	name string
	// reason is the drop counter each copy must raise on the attacker's
	// port: a secure-mode reason or an engine drop.
	reason string
	// tapOnly: the policy refuses the frame only on its way to the TAP
	// (TapEtherDenied, TapProtoDenied); other clients may receive it, and
	// the observer must get the broadcast copy.
	tapOnly bool
	frame   func(e *batteryEnv, dst [6]byte, mark []byte) []byte
}

// batteryEnv is what the frames need to know of the switch.
type batteryEnv struct {
	tapMAC, victimMAC [6]byte
}

func spoofClasses() []spoofClass {
	// A frame from the attacker's own MAC and address, broken by fn.
	own := func(fn func(h []byte)) func(e *batteryEnv, dst [6]byte, mark []byte) []byte {
		return func(e *batteryEnv, dst [6]byte, mark []byte) []byte {
			return patch(testbed.IPv4UDP(macA, dst, ownIP, tapIP, 40000, 9, mark), fn)
		}
	}
	udpFrom := func(src netip.Addr) func(*batteryEnv, [6]byte, []byte) []byte {
		return func(_ *batteryEnv, dst [6]byte, mark []byte) []byte {
			return testbed.IPv4UDP(macA, dst, src, tapIP, 40000, 9, mark)
		}
	}
	icmpFrom := func(src netip.Addr) func(*batteryEnv, [6]byte, []byte) []byte {
		return func(_ *batteryEnv, dst [6]byte, mark []byte) []byte {
			return testbed.ICMPEcho(macA, dst, src, tapIP, icmpID, 1, mark)
		}
	}
	fromMAC := func(src [6]byte) func(*batteryEnv, [6]byte, []byte) []byte {
		return func(_ *batteryEnv, dst [6]byte, mark []byte) []byte {
			return testbed.IPv4UDP(src, dst, ownIP, tapIP, 40000, 9, mark)
		}
	}
	// inner is a spoofed datagram carried inside a tag or a tunnel.
	innerIP := func() *layers.IPv4 { return ipv4(layers.IPProtocolUDP, outside, tapIP) }
	innerUDP := func(ip *layers.IPv4) *layers.UDP {
		u := &layers.UDP{SrcPort: 40000, DstPort: 9}
		_ = u.SetNetworkLayerForChecksum(ip)
		return u
	}
	return []spoofClass{
		// IPv4 sources outside the CIDR, whatever the protocol.
		{"TCP from outside the CIDR", "ipv4-src-outside", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return tcp4(macA, dst, outside, tapIP, m)
		}},
		{"UDP from outside the CIDR", "ipv4-src-outside", false, udpFrom(outside)},
		{"ICMP from outside the CIDR", "ipv4-src-outside", false, icmpFrom(outside)},
		{"UDP from the network address", "ipv4-src-outside", false, udpFrom(netAddr)},
		{"UDP from the subnet broadcast address", "ipv4-src-outside", false, udpFrom(bcastIP)},
		{"ICMP from the limited broadcast address", "ipv4-src-outside", false, icmpFrom(allOnes)},
		{"later fragment from outside the CIDR", "ipv4-src-outside", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return patch(testbed.IPv4UDP(macA, dst, outside, tapIP, 40000, 9, m), func(h []byte) { binary.BigEndian.PutUint16(h[6:], 100) })
		}},

		// 0.0.0.0 is for DHCP clients only.
		{"ICMP from 0.0.0.0", "ipv4-zero-src-not-dhcp", false, icmpFrom(zeroIP)},
		{"UDP from 0.0.0.0 to port 53", "ipv4-zero-src-not-dhcp", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(macA, dst, zeroIP, tapIP, 68, 53, m)
		}},
		{"UDP from 0.0.0.0 port 67 (a server's port) to 67", "ipv4-zero-src-not-dhcp", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(macA, dst, zeroIP, allOnes, 67, 67, m)
		}},
		{"UDP from 0.0.0.0 port 68 to 68", "ipv4-zero-src-not-dhcp", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(macA, dst, zeroIP, allOnes, 68, 68, m)
		}},
		{"TCP from 0.0.0.0", "ipv4-zero-src-not-dhcp", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return tcp4(macA, dst, zeroIP, tapIP, m)
		}},
		{"DHCP ports from 0.0.0.0 in a fragment", "ipv4-zero-src-not-dhcp", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return patch(testbed.IPv4UDP(macA, dst, zeroIP, allOnes, 68, 67, m), func(h []byte) { h[6] |= 0x20 })
		}},

		// Only the host side serves DHCP and advertises routers, even from
		// a client's own, valid address.
		{"DHCP offer from the attacker's own address", "dhcp-server", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return dhcpReply(macA, dst, ownIP, allOnes, 67, 68, layers.DHCPMsgTypeOffer, m)
		}},
		{"DHCP ack to the victim's address", "dhcp-server", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return dhcpReply(macA, dst, ownIP, victimIP, 67, 68, layers.DHCPMsgTypeAck, m)
		}},
		{"DHCP relayed to a server (port 67 to 67)", "dhcp-server", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(macA, dst, ownIP, tapIP, 67, 67, m)
		}},
		{"DHCP offer in a first fragment", "dhcp-server", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return patch(dhcpReply(macA, dst, ownIP, allOnes, 67, 68, layers.DHCPMsgTypeOffer, m), func(h []byte) { h[6] |= 0x20 })
		}},
		{"ICMP redirect", "icmp-redirect", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return icmp4(macA, dst, ownIP, victimIP, 5, m)
		}},
		{"ICMP router advertisement", "icmp-router-advert", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return icmp4(macA, dst, ownIP, ipAt(224, 0, 0, 1), 9, m)
		}},

		// Addresses that belong to someone else.
		{"ICMP from the TAP's address", "tap-addr-claimed", false, icmpFrom(tapIP)},
		{"UDP from the TAP's address", "tap-addr-claimed", false, udpFrom(tapIP)},
		{"UDP from another client's bound address", "ip-binding-conflict", false, udpFrom(victimIP)},
		{"ICMP from another client's bound address", "ip-binding-conflict", false, icmpFrom(victimIP)},
		{"another client's MAC and address both", "src-mac-in-use", false, func(e *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(e.victimMAC, dst, victimIP, tapIP, 40000, 9, m)
		}},
		{"another client's live MAC with a free address", "src-mac-in-use", false, func(e *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(e.victimMAC, dst, freshIP, tapIP, 40000, 9, m)
		}},

		// ARP.
		{"ARP request whose sender MAC is not the frame's", "arp-sender-mismatch", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return arp(layers.ARPRequest, macA, dst, macB, ownIP, noMAC, tapIP, m)
		}},
		{"ARP reply naming another client's MAC as sender", "arp-sender-mismatch", false, func(e *batteryEnv, dst [6]byte, m []byte) []byte {
			return arp(layers.ARPReply, macA, dst, e.victimMAC, victimIP, e.tapMAC, tapIP, m)
		}},
		{"ARP sender address outside the CIDR", "arp-sender-outside", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return arp(layers.ARPRequest, macA, dst, macA, outside, noMAC, tapIP, m)
		}},
		{"ARP reply from 0.0.0.0", "arp-sender-outside", false, func(e *batteryEnv, dst [6]byte, m []byte) []byte {
			return arp(layers.ARPReply, macA, dst, macA, zeroIP, e.tapMAC, tapIP, m)
		}},
		{"ARP reply claiming the TAP's address", "tap-addr-claimed", false, func(e *batteryEnv, dst [6]byte, m []byte) []byte {
			return arp(layers.ARPReply, macA, dst, macA, tapIP, e.victimMAC, victimIP, m)
		}},
		{"ARP request sent as the TAP's address", "tap-addr-claimed", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return arp(layers.ARPRequest, macA, dst, macA, tapIP, noMAC, victimIP, m)
		}},
		{"gratuitous ARP for another client's address", "ip-binding-conflict", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return arp(layers.ARPRequest, macA, dst, macA, victimIP, noMAC, victimIP, m)
		}},
		{"ARP reply claiming another client's address", "ip-binding-conflict", false, func(e *batteryEnv, dst [6]byte, m []byte) []byte {
			return arp(layers.ARPReply, macA, dst, macA, victimIP, e.tapMAC, tapIP, m)
		}},
		{"ARP for a non-Ethernet hardware type", "arp-malformed", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			f := arp(layers.ARPRequest, macA, dst, macA, ownIP, noMAC, tapIP, m)
			binary.BigEndian.PutUint16(f[14:], 6) // IEEE 802
			return f
		}},
		{"ARP operation 3 (RARP request)", "arp-malformed", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			f := arp(layers.ARPRequest, macA, dst, macA, ownIP, noMAC, tapIP, m)
			binary.BigEndian.PutUint16(f[20:], 3)
			return f
		}},
		{"ARP cut short after its fixed header", "truncated", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.EthernetFrame(dst, macA, 0x0806, append([]byte{0, 1, 8, 0, 6, 4, 0, 1}, m...))
		}},

		// Source MACs no station may use.
		{"source MAC of the TAP", "src-mac-tap", false, func(e *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(e.tapMAC, dst, ownIP, tapIP, 40000, 9, m)
		}},
		{"multicast source MAC", "src-mac-multicast", false, fromMAC(mcastMAC)},
		{"broadcast source MAC", "src-mac-multicast", false, fromMAC(testbed.Broadcast)},
		{"all-zero source MAC", "src-mac-zero", false, fromMAC(noMAC)},

		// Tags hide the real frame from a filter that looks only at the
		// outer ethertype.
		{"802.1Q tag around a spoofed source", "vlan-tagged", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			ip := innerIP()
			return build(eth(macA, dst, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
				ip, innerUDP(ip), gopacket.Payload(m))
		}},
		{"802.1Q tag around a legitimate datagram", "vlan-tagged", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			ip := ipv4(layers.IPProtocolUDP, ownIP, tapIP)
			return build(eth(macA, dst, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
				ip, innerUDP(ip), gopacket.Payload(m))
		}},
		{"802.1ad double tag around a spoofed source", "vlan-tagged", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			ip := innerIP()
			return build(eth(macA, dst, layers.EthernetTypeQinQ),
				&layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeDot1Q},
				&layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
				ip, innerUDP(ip), gopacket.Payload(m))
		}},

		// IPv6 without --ipv6.
		{"IPv6 UDP from a link-local address", "ipv6-disabled", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64, SrcIP: ll6, DstIP: allNodes}
			u := &layers.UDP{SrcPort: 40000, DstPort: 9}
			_ = u.SetNetworkLayerForChecksum(ip)
			return build(eth(macA, dst, layers.EthernetTypeIPv6), ip, u, gopacket.Payload(m))
		}},
		{"IPv6 neighbour advertisement", "ipv6-disabled", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255, SrcIP: ll6, DstIP: allNodes}
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)}
			_ = ic.SetNetworkLayerForChecksum(ip)
			na := &layers.ICMPv6NeighborAdvertisement{Flags: 0x20, TargetAddress: net.ParseIP("fe80::1"),
				Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: macA[:]}}}
			return append(build(eth(macA, dst, layers.EthernetTypeIPv6), ip, ic, na), m...)
		}},

		// Broken IPv4 headers, from the attacker's own address.
		{"IPv4 header length 4 words", "ipv4-malformed", false, own(func(h []byte) { h[0] = 0x44 })},
		{"IPv4 total length shorter than the header", "ipv4-malformed", false, own(func(h []byte) { binary.BigEndian.PutUint16(h[2:], 10) })},
		{"IPv4 total length past the frame's end", "truncated", false, own(func(h []byte) {
			binary.BigEndian.PutUint16(h[2:], binary.BigEndian.Uint16(h[2:])+200)
		})},
		{"version 6 in an IPv4 ethertype", "ipv4-malformed", false, own(func(h []byte) { h[0] = 0x65 })},
		{"IPv4 option with length 1", "ipv4-malformed", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			ip := ipv4(layers.IPProtocolUDP, ownIP, tapIP)
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}} // router alert
			u := &layers.UDP{SrcPort: 40000, DstPort: 9}
			_ = u.SetNetworkLayerForChecksum(ip)
			f := build(eth(macA, dst, layers.EthernetTypeIPv4), ip, u, gopacket.Payload(m))
			return patch(f, func(h []byte) { h[21] = 1 })
		}},
		{"wrong IPv4 header checksum", "ipv4-bad-checksum", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			f := testbed.IPv4UDP(macA, dst, ownIP, tapIP, 40000, 9, m)
			f[14+10] ^= 0x5a
			return f
		}},
		{"IPv4 header cut at 19 bytes", "truncated", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.EthernetFrame(dst, macA, 0x0800, append([]byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64}, m...)[:19])
		}},
		{"UDP header cut short", "truncated", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return payloadOnly4(macA, dst, layers.IPProtocolUDP, ownIP, tapIP, []byte{0x9c, 0x40, 0, 9}, m)
		}},
		{"ICMP header cut short", "truncated", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return payloadOnly4(macA, dst, layers.IPProtocolICMPv4, ownIP, tapIP, []byte{8, 0, 0, 0}, m)
		}},
		{"TCP data offset of 4 words", "transport-malformed", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			f := tcp4(macA, dst, ownIP, tapIP, m)
			f[14+20+12] = 4 << 4
			return f
		}},
		{"UDP length field of 4", "transport-malformed", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			f := testbed.IPv4UDP(macA, dst, ownIP, tapIP, 40000, 9, m)
			binary.BigEndian.PutUint16(f[14+20+4:], 4)
			return f
		}},

		// Legitimate between clients, never for the TAP.
		{"GRE to the TAP", "tap-proto-denied", true, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			ip := innerIP()
			return build(eth(macA, dst, layers.EthernetTypeIPv4), ipv4(layers.IPProtocolGRE, ownIP, tapIP),
				&layers.GRE{Protocol: layers.EthernetTypeIPv4}, ip, innerUDP(ip), gopacket.Payload(m))
		}},
		{"IP-in-IP with a spoofed inner source", "tap-proto-denied", true, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			ip := innerIP()
			return build(eth(macA, dst, layers.EthernetTypeIPv4), ipv4(layers.IPProtocolIPv4, ownIP, tapIP),
				ip, innerUDP(ip), gopacket.Payload(m))
		}},
		{"SCTP to the TAP", "tap-proto-denied", true, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return build(eth(macA, dst, layers.EthernetTypeIPv4), ipv4(layers.IPProtocolSCTP, ownIP, tapIP),
				gopacket.Payload(append(make([]byte, 12), m...)))
		}},
		{"local experimental ethertype 0x88b5", "tap-ethertype-denied", true, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return build(eth(macA, dst, layers.EthernetType(0x88b5)), gopacket.Payload(m))
		}},
		{"LLDP", "tap-ethertype-denied", true, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return build(eth(macA, dst, layers.EthernetTypeLinkLayerDiscovery), gopacket.Payload(m))
		}},
		{"802.3 length field with LLC (STP's SAPs)", "tap-ethertype-denied", true, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return build(eth(macA, dst, layers.EthernetTypeLLC), &layers.LLC{DSAP: 0x42, SSAP: 0x42, Control: 3}, gopacket.Payload(m))
		}},

		// Sizes and MAC counts.
		{"runt of 13 bytes", "runt", false, func(_ *batteryEnv, dst [6]byte, _ []byte) []byte {
			return append(append(dst[:], macA[:]...), 0x08)
		}},
		{"1515-byte frame (MTU 1500)", "oversize", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(macA, dst, ownIP, tapIP, 40000, 9, append(m, make([]byte, 1473-len(m))...))
		}},
		{"9014-byte jumbo frame", "oversize", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(macA, dst, ownIP, tapIP, 40000, 9, append(m, make([]byte, 8972-len(m))...))
		}},
		{"a third MAC with --port-macs 2", "port-mac-limit", false, func(_ *batteryEnv, dst [6]byte, m []byte) []byte {
			return testbed.IPv4UDP(macC, dst, ipC, tapIP, 40000, 9, m)
		}},
	}
}

// legitFrame is a frame secure mode must pass; toAll: it is broadcast, so
// the observer must get it too.
type legitFrame struct {
	name  string
	toAll bool
	frame func(e *batteryEnv, mark []byte) []byte
}

func legitFrames() []legitFrame {
	return []legitFrame{
		{"UDP from the attacker's own address", false, func(e *batteryEnv, m []byte) []byte {
			return testbed.IPv4UDP(macA, e.tapMAC, ownIP, tapIP, 40000, 9, m)
		}},
		{"ICMP echo from the attacker's own address", false, func(e *batteryEnv, m []byte) []byte {
			return testbed.ICMPEcho(macA, e.tapMAC, ownIP, tapIP, icmpID, 1, m)
		}},
		{"TCP SYN from the attacker's own address", false, func(e *batteryEnv, m []byte) []byte {
			return tcp4(macA, e.tapMAC, ownIP, tapIP, m)
		}},
		{"IPv4 with a router-alert option", false, func(e *batteryEnv, m []byte) []byte {
			ip := ipv4(layers.IPProtocolUDP, ownIP, tapIP)
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
			u := &layers.UDP{SrcPort: 40000, DstPort: 9}
			_ = u.SetNetworkLayerForChecksum(ip)
			return build(eth(macA, e.tapMAC, layers.EthernetTypeIPv4), ip, u, gopacket.Payload(m))
		}},
		{"later fragment from the attacker's own address", false, func(e *batteryEnv, m []byte) []byte {
			return patch(testbed.IPv4UDP(macA, e.tapMAC, ownIP, tapIP, 40000, 9, m), func(h []byte) { binary.BigEndian.PutUint16(h[6:], 100) })
		}},
		{"second MAC with its own address (--port-macs 2)", false, func(e *batteryEnv, m []byte) []byte {
			return testbed.IPv4UDP(macB, e.tapMAC, ipB, tapIP, 40000, 9, m)
		}},
		{"DHCP discover from 0.0.0.0", true, func(_ *batteryEnv, m []byte) []byte {
			return dhcp4(macA, m)
		}},
		{"ARP probe (sender 0.0.0.0)", true, func(_ *batteryEnv, m []byte) []byte {
			return arp(layers.ARPRequest, macA, testbed.Broadcast, macA, zeroIP, noMAC, netip.MustParseAddr("198.18.0.33"), m)
		}},
		{"gratuitous ARP for the attacker's own address", true, func(_ *batteryEnv, m []byte) []byte {
			return arp(layers.ARPRequest, macA, testbed.Broadcast, macA, ownIP, noMAC, ownIP, m)
		}},
	}
}

func spoofMark(i int) []byte { return []byte(fmt.Sprintf("SPOOF#%03d#", i)) }
func legitMark(i int) []byte { return []byte(fmt.Sprintf("LEGIT#%03d#", i)) }

// TestSpoofBattery sends every class of spoofed frame into the socket while
// the TAP is captured: none may reach the TAP (or, unless the policy lets
// clients exchange it, the other clients), every legitimate frame must,
// a legitimate client keeps pinging the host, and every drop is counted
// under its reason. It runs with the kernel filter (the default), which
// drops some of the attack in the attacker's sendmsg, and without it.
func TestSpoofBattery(t *testing.T) {
	t.Run("kernel filter", func(t *testing.T) { spoofBattery(t, true, false, false) })
	t.Run("no-bpf", func(t *testing.T) { spoofBattery(t, false, false, false) })
	// A vhost-user guest is judged by the same policy, in userspace alone
	// (no socket carries its frames for the kernel to filter).
	t.Run("vhost-user", func(t *testing.T) { spoofBattery(t, false, true, false) })
	// The same guest with offloads: every TCP and UDP frame goes with a
	// virtio_net_hdr asking the switch to finish its checksum (TSO for
	// TCP), as a Linux guest sends them. The policy judges such a frame
	// as any other; it reaches the TAP whole, with its header.
	t.Run("vhost-user offloads", func(t *testing.T) { spoofBattery(t, false, true, true) })
}

func spoofBattery(t *testing.T, bpf, vhost, offloads bool) {
	args := []string{"--port-macs", "2"}
	if !bpf {
		args = append(args, "--no-bpf")
	}
	vhostPath := ""
	if vhost {
		vhostPath = filepath.Join(testbed.ShortTempDir(t), "vknet.vhost")
		args = append(args, "--vhost-user", vhostPath)
	}
	d := startDaemon(t, args...)
	if on := strings.Contains(d.p.Output(), "kernel_filter=true"); on != bpf {
		t.Fatalf("kernel filter on: %v, want %v:\n%s", on, bpf, d.p.Output())
	}
	tapCap := startCapture(t, d.ns, tapName)

	victim, _, _, victimMAC := d.socat(t, victimIP.String()+"/16")
	// The victim's ping binds 198.18.0.2 to it, and the TAP's replies
	// teach the switch where the TAP's MAC is.
	if ok, out := victim.Ping(t, tapIP.String(), 2); !ok {
		t.Fatalf("the legitimate client cannot ping the host before the attack:\n%s", out)
	}
	var attacker frameClient
	var aport int
	if vhost {
		before := len(d.connectedPorts())
		vc := dialVhost(t, vhostPath, offloads)
		attacker = vc
		aport = d.waitNewPort(t, before)
		if offloads {
			defer func() {
				t.Logf("%d of the attacker's frames went with an offload header", vc.offloaded)
				if vc.offloaded == 0 {
					t.Error("no frame went with an offload header")
				}
			}()
		}
	} else {
		attacker, aport = d.connect(t)
	}
	observer, _ := d.connect(t)
	env := &batteryEnv{tapMAC: d.tapMAC, victimMAC: victimMAC}

	sent := 0
	send := func(f []byte) {
		attacker.Send(t, f)
		sent++
	}
	// The attacker is a working client too: its own address resolves the host.
	send(arp(layers.ARPRequest, macA, testbed.Broadcast, macA, ownIP, noMAC, tapIP, nil))
	expectARPReply(t, attacker, d.tapMAC, ownIP)

	const pings = 25
	ping := startPing(t, victim, pings)

	classes := spoofClasses()
	legit := legitFrames()
	type sentSpoof struct {
		class  *spoofClass
		dst    [6]byte
		mark   []byte
		frame  []byte
		bcastV bool
	}
	var spoofs []sentSpoof
	nLegit := 0
	sendLegit := func() {
		for i := range legit {
			send(legit[i].frame(env, legitMark(nLegit)))
			nLegit++
		}
	}
	sendLegit()
	for i := range classes {
		for v, dst := range [][6]byte{d.tapMAC, testbed.Broadcast} {
			mark := spoofMark(len(spoofs))
			f := classes[i].frame(env, dst, mark)
			spoofs = append(spoofs, sentSpoof{&classes[i], dst, mark, f, v == 1})
			send(f)
			// Spread the attack over the victim's pings.
			time.Sleep(25 * time.Millisecond)
		}
	}
	// Legitimate frames after the attack prove the capture still works.
	sendLegit()

	for i := 0; i < nLegit; i++ {
		lf := &legit[i%len(legit)]
		if !tapCap.waitFor(t, legitMark(i), 3*time.Second) {
			t.Errorf("legitimate frame %q (%s) never reached the TAP", lf.name, legitMark(i))
		}
	}
	finishPing(t, ping, pings)
	// The legitimate frames, sent last, have arrived: anything the switch
	// let through before them has too.
	time.Sleep(100 * time.Millisecond)

	leaks := 0
	for _, s := range spoofs {
		for _, f := range tapCap.containing(t, s.mark) {
			leaks++
			t.Errorf("HOLE: %q (expected drop %s) reached the TAP\n sent:     %s\n captured: %s",
				s.class.name, s.class.reason, hex.EncodeToString(s.frame), hex.EncodeToString(f))
		}
	}
	t.Logf("%d spoof classes, %d frames sent to the switch, %d captured on the TAP, %d leaks",
		len(classes), sent, tapCap.count(), leaks)

	// The observer sees what is flooded: the broadcast copies of frames the
	// policy allows between clients, and nothing else of the attack.
	seen := map[string]bool{}
	for {
		f, err := observer.Recv(300 * time.Millisecond)
		if err != nil {
			break
		}
		for _, s := range spoofs {
			if bytes.Contains(f, s.mark) {
				seen[string(s.mark)] = true
				if !s.class.tapOnly {
					t.Errorf("HOLE: %q (expected drop %s) reached another client\n sent: %s",
						s.class.name, s.class.reason, hex.EncodeToString(s.frame))
				}
			}
		}
		for i := 0; i < nLegit; i++ {
			if bytes.Contains(f, legitMark(i)) {
				seen[string(legitMark(i))] = true
			}
		}
	}
	for _, s := range spoofs {
		if s.class.tapOnly && s.bcastV && !seen[string(s.mark)] {
			t.Errorf("%q is allowed between clients, but its broadcast copy did not reach the observer", s.class.name)
		}
	}
	for i := 0; i < nLegit; i++ {
		if lf := legit[i%len(legit)]; lf.toAll && !seen[string(legitMark(i))] {
			t.Errorf("broadcast legitimate frame %q did not reach the observer", lf.name)
		}
	}

	// Every attack frame is counted once, under its reason or, dropped by
	// the kernel filter before the daemon read it, as kernel-filter;
	// legitimate ones are not counted as drops at all.
	want := map[string]int{}
	for _, s := range spoofs {
		want[s.class.reason]++
	}
	kv := d.counters(t, aport)
	got := drops(kv)
	switch {
	case !bpf && fmt.Sprint(sortedCounts(got)) != fmt.Sprint(sortedCounts(want)),
		bpf && !sameDrops(got, want):
		t.Errorf("attacker's drop counters:\n got %v\nwant %v (some as kernel-filter with the filter)", sortedCounts(got), sortedCounts(want))
	case bpf && got[kernelFilter] == 0:
		t.Errorf("the kernel filter dropped none of the attack: %v", sortedCounts(got))
	}
	t.Logf("kernel filter dropped %d of %d attack frames", got[kernelFilter], len(spoofs))
	if rx, _ := strconv.Atoi(kv["rx_frames"]); rx != sent-got[kernelFilter] {
		t.Errorf("attacker's rx_frames = %d, want the %d frames sent less the %d the kernel dropped", rx, sent, got[kernelFilter])
	}

	// The host's ARP cache: the victim's address still maps to the victim,
	// and nothing the attacker claimed beyond its own addresses made it in.
	for ip, mac := range neighbours(t, d.ns, tapName) {
		switch {
		case ip == victimIP && mac != victimMAC:
			t.Errorf("HOLE: the host's ARP cache maps %v to %s, not the victim's %s", ip, net.HardwareAddr(mac[:]), net.HardwareAddr(victimMAC[:]))
		case ip != ownIP && ip != ipB && ip != victimIP:
			t.Errorf("HOLE: the host's ARP cache learned %v at %s from the attack", ip, net.HardwareAddr(mac[:]))
		}
	}
}

// expectARPReply waits for the host's ARP reply to ip at mac.
func expectARPReply(t *testing.T, c frameClient, from [6]byte, to netip.Addr) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		f, err := c.Recv(time.Until(deadline))
		if err != nil {
			break
		}
		p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		if a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok && a.Operation == layers.ARPReply &&
			bytes.Equal(a.SourceHwAddress, from[:]) && bytes.Equal(a.DstProtAddress, ip4(to)) {
			return
		}
	}
	t.Fatalf("no ARP reply from %s to %v within 3s", net.HardwareAddr(from[:]), to)
}

func sortedCounts(m map[string]int) []string {
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(s)
	return s
}
