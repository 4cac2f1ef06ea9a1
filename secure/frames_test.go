package secure

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The test segment: the TAP is 198.18.0.1/16 (and 2001:db8::1/64 when IPv6
// is on); clients A and B sit on ports 1 and 2.
var (
	tapMAC = mac("02:00:00:00:00:01")
	macA   = mac("52:54:00:00:00:0a")
	macB   = mac("52:54:00:00:00:0b")
	bcast  = mac("ff:ff:ff:ff:ff:ff")

	tapIP = "198.18.0.1"
	ipA   = "198.18.0.10"
	ipB   = "198.18.0.11"

	tap6   = "2001:db8::1"
	ip6A   = "2001:db8::a"
	llA    = "fe80::5054:ff:fe00:a"
	allND  = "ff02::1"
	snmA   = "ff02::1:ff00:a"
	tapLL6 = eui64LinkLocal(tapMAC).String()
)

const (
	portA uint32 = 1
	portB uint32 = 2
)

func mac(s string) [6]byte {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return [6]byte(m)
}

func ip(s string) net.IP { return net.IP(netip.MustParseAddr(s).AsSlice()) }

func testConfig(v6 bool) Config {
	cfg := Config{
		Secure:      true,
		Network:     netip.MustParsePrefix(tapIP + "/16"),
		TapMAC:      tapMAC,
		BindingAge:  5 * time.Minute,
		MaxBindings: 64,
		// Generous enough for a guest's IPv4, link-local and global IPv6
		// addresses; the limit itself has its own rule case.
		PortBindings: 4,
		MaxPorts:     8,
	}
	if v6 {
		cfg.IPv6 = netip.MustParsePrefix(tap6 + "/64")
	}
	return cfg
}

func newTestPolicy(t testing.TB, cfg Config) *Policy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// serialize builds a frame with gopacket, fixing lengths and checksums.
func serialize(ls ...gopacket.SerializableLayer) []byte {
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.TCP:
			l.SetNetworkLayerForChecksum(networkOf(ls))
		case *layers.UDP:
			l.SetNetworkLayerForChecksum(networkOf(ls))
		case *layers.ICMPv6:
			l.SetNetworkLayerForChecksum(networkOf(ls))
		}
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func networkOf(ls []gopacket.SerializableLayer) gopacket.NetworkLayer {
	for _, l := range ls {
		if n, ok := l.(gopacket.NetworkLayer); ok {
			return n
		}
	}
	return nil
}

func ether(src, dst [6]byte, et layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: net.HardwareAddr(src[:]), DstMAC: net.HardwareAddr(dst[:]), EthernetType: et}
}

func ip4(src, dst string, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: ip(src), DstIP: ip(dst)}
}

func tcpFrame(srcMAC [6]byte, src, dst string) []byte {
	return serialize(ether(srcMAC, tapMAC, layers.EthernetTypeIPv4), ip4(src, dst, layers.IPProtocolTCP),
		&layers.TCP{SrcPort: 40000, DstPort: 22, Seq: 1, ACK: true, Window: 512}, gopacket.Payload("hello"))
}

func udpFrame(srcMAC [6]byte, src, dst string, sport, dport layers.UDPPort) []byte {
	return serialize(ether(srcMAC, bcast, layers.EthernetTypeIPv4), ip4(src, dst, layers.IPProtocolUDP),
		&layers.UDP{SrcPort: sport, DstPort: dport}, gopacket.Payload("bootp....."))
}

// dhcpFrame is a DHCP client message (BOOTREQUEST, UDP 68 to 67) from
// ethSrc whose client hardware address is chaddr, with an optional
// Ethernet-type client identifier option carrying clientID.
func dhcpFrame(ethSrc, chaddr [6]byte, src string, msg layers.DHCPMsgType, clientID *[6]byte) []byte {
	opts := []layers.DHCPOption{layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(msg)})}
	if clientID != nil {
		opts = append(opts, layers.NewDHCPOption(layers.DHCPOptClientID, append([]byte{1}, clientID[:]...)))
	}
	return serialize(ether(ethSrc, bcast, layers.EthernetTypeIPv4), ip4(src, "255.255.255.255", layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 68, DstPort: 67},
		&layers.DHCPv4{Operation: layers.DHCPOpRequest, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6,
			Xid: 0x1234, ClientHWAddr: net.HardwareAddr(chaddr[:]), Options: opts})
}

func icmpFrame(srcMAC [6]byte, src, dst string) []byte {
	return serialize(ether(srcMAC, tapMAC, layers.EthernetTypeIPv4), ip4(src, dst, layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1},
		gopacket.Payload("ping"))
}

// ipProtoFrame is an IPv4 datagram of protocol proto with payload as is.
func ipProtoFrame(srcMAC [6]byte, src, dst string, proto layers.IPProtocol, payload []byte) []byte {
	return serialize(ether(srcMAC, tapMAC, layers.EthernetTypeIPv4), ip4(src, dst, proto), gopacket.Payload(payload))
}

// fragFrame is an IPv4 fragment: flags and 8-byte offset as given.
func fragFrame(srcMAC [6]byte, src string, proto layers.IPProtocol, flags layers.IPv4Flag, off uint16, payload []byte) []byte {
	h := ip4(src, tapIP, proto)
	h.Flags, h.FragOffset = flags, off
	return serialize(ether(srcMAC, tapMAC, layers.EthernetTypeIPv4), h, gopacket.Payload(payload))
}

func arpFrame(ethSrc [6]byte, op uint16, senderMAC [6]byte, sender, target string) []byte {
	return serialize(ether(ethSrc, bcast, layers.EthernetTypeARP), &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
		SourceHwAddress: senderMAC[:], SourceProtAddress: ip(sender).To4(),
		DstHwAddress: make([]byte, 6), DstProtAddress: ip(target).To4(),
	}, gopacket.Payload(make([]byte, 18))) // padding to the 60-byte minimum
}

func ip6(src, dst string, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: next, SrcIP: ip(src), DstIP: ip(dst)}
}

func icmp6(typ uint8) *layers.ICMPv6 {
	return &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
}

func llOpt(typ layers.ICMPv6Opt, m [6]byte) layers.ICMPv6Option {
	return layers.ICMPv6Option{Type: typ, Data: append([]byte(nil), m[:]...)}
}

func echo6Frame(srcMAC [6]byte, src, dst string) []byte {
	return serialize(ether(srcMAC, tapMAC, layers.EthernetTypeIPv6), ip6(src, dst, layers.IPProtocolICMPv6),
		icmp6(layers.ICMPv6TypeEchoRequest), &layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1}, gopacket.Payload("ping"))
}

func udp6Frame(srcMAC [6]byte, src, dst string) []byte {
	return serialize(ether(srcMAC, tapMAC, layers.EthernetTypeIPv6), ip6(src, dst, layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 5000, DstPort: 53}, gopacket.Payload("query"))
}

func naFrame(ethSrc [6]byte, src, target string, opts ...layers.ICMPv6Option) []byte {
	return serialize(ether(ethSrc, bcast, layers.EthernetTypeIPv6), ip6(src, allND, layers.IPProtocolICMPv6),
		icmp6(layers.ICMPv6TypeNeighborAdvertisement),
		&layers.ICMPv6NeighborAdvertisement{Flags: 0x20, TargetAddress: ip(target), Options: opts})
}

func nsFrame(ethSrc [6]byte, src, target string, opts ...layers.ICMPv6Option) []byte {
	return serialize(ether(ethSrc, bcast, layers.EthernetTypeIPv6), ip6(src, snmA, layers.IPProtocolICMPv6),
		icmp6(layers.ICMPv6TypeNeighborSolicitation),
		&layers.ICMPv6NeighborSolicitation{TargetAddress: ip(target), Options: opts})
}

func rsFrame(ethSrc [6]byte, src string, opts ...layers.ICMPv6Option) []byte {
	return serialize(ether(ethSrc, bcast, layers.EthernetTypeIPv6), ip6(src, "ff02::2", layers.IPProtocolICMPv6),
		icmp6(layers.ICMPv6TypeRouterSolicitation), &layers.ICMPv6RouterSolicitation{Options: opts})
}

func raFrame(ethSrc [6]byte, src string, opts ...layers.ICMPv6Option) []byte {
	return serialize(ether(ethSrc, bcast, layers.EthernetTypeIPv6), ip6(src, allND, layers.IPProtocolICMPv6),
		icmp6(layers.ICMPv6TypeRouterAdvertisement), &layers.ICMPv6RouterAdvertisement{HopLimit: 64, RouterLifetime: 1800, Options: opts})
}

// ext6Frame puts raw extension headers (their first next-header byte
// included) between the IPv6 header and an already serialized upper layer.
func ext6Frame(ethSrc [6]byte, src, dst string, first layers.IPProtocol, ext, upper []byte) []byte {
	return serialize(ether(ethSrc, bcast, layers.EthernetTypeIPv6), ip6(src, dst, first),
		gopacket.Payload(append(append([]byte(nil), ext...), upper...)))
}

// icmp6Bytes serializes an ICMPv6 message alone (no checksum: the policy
// does not verify checksums, receivers do).
func icmp6Bytes(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// mlduReport is an MLDv2 report body: type 143, one record for ff02::1:ff00:a.
func mld2Report() []byte {
	b := []byte{143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0}
	return append(b, netip.MustParseAddr(snmA).AsSlice()...)
}

// hopByHopRouterAlert is the hop-by-hop header MLD reports carry.
func hopByHopRouterAlert(next layers.IPProtocol) []byte {
	return []byte{byte(next), 0, 5, 2, 0, 0, 1, 0}
}

func destOpts(next layers.IPProtocol) []byte {
	return []byte{byte(next), 0, 1, 4, 0, 0, 0, 0} // PadN
}

func fragHeader(next layers.IPProtocol, off uint16, more bool) []byte {
	v := off << 3
	if more {
		v |= 1
	}
	b := []byte{byte(next), 0, 0, 0, 0, 0, 0, 42}
	binary.BigEndian.PutUint16(b[2:4], v)
	return b
}

func vlanFrame(et layers.EthernetType, inner []byte) []byte {
	f := append([]byte(nil), inner[:12]...)
	f = binary.BigEndian.AppendUint16(f, uint16(et))
	f = binary.BigEndian.AppendUint16(f, 10) // VLAN 10
	return append(f, inner[12:]...)
}

// mutate returns a copy of f with fn applied.
func mutate(f []byte, fn func(b []byte) []byte) []byte {
	return fn(append([]byte(nil), f...))
}

// setIPv4 rewrites IPv4 header bytes (offsets within the IPv4 header).
func setIPv4(f []byte, off int, v ...byte) []byte {
	return mutate(f, func(b []byte) []byte { copy(b[14+off:], v); return b })
}

// fixIPv4Checksum recomputes the IPv4 header checksum of a mutated frame.
func fixIPv4Checksum(f []byte) []byte {
	h := f[14 : 14+int(f[14]&0x0f)*4]
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:12], ^uint16(sum))
	return f
}

// udpBytes is a UDP header and payload as is (no checksum: the policy does
// not verify checksums, receivers do).
func udpBytes(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// dhcpReplyFrame is a DHCP server message (BOOTREPLY of type msg) from
// src:sport to dst:dport, offering 198.18.0.99 with a gateway and resolver
// of the sender's choosing.
func dhcpReplyFrame(ethSrc [6]byte, src, dst string, sport, dport layers.UDPPort, msg layers.DHCPMsgType) []byte {
	return serialize(ether(ethSrc, bcast, layers.EthernetTypeIPv4), ip4(src, dst, layers.IPProtocolUDP),
		&layers.UDP{SrcPort: sport, DstPort: dport},
		&layers.DHCPv4{Operation: layers.DHCPOpReply, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6,
			Xid: 0x1234, YourClientIP: ip("198.18.0.99"), ClientHWAddr: net.HardwareAddr(macB[:]),
			Options: []layers.DHCPOption{
				layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(msg)}),
				layers.NewDHCPOption(layers.DHCPOptRouter, ip(src).To4()),
				layers.NewDHCPOption(layers.DHCPOptDNS, ip(src).To4()),
			}})
}

// icmp4Frame is an ICMP message of type typ with an 8-byte header and a
// gateway address as its body (what a redirect carries).
func icmp4Frame(srcMAC [6]byte, src, dst string, typ uint8) []byte {
	return ipProtoFrame(srcMAC, src, dst, layers.IPProtocolICMPv4, []byte{typ, 1, 0, 0, 198, 18, 0, 10})
}

// redirect6Body is an ICMPv6 redirect: target fe80::a, destination tap6.
func redirect6Body() []byte {
	b := []byte{137, 0, 0, 0, 0, 0, 0, 0}
	b = append(b, netip.MustParseAddr(llA).AsSlice()...)
	return append(b, netip.MustParseAddr(tap6).AsSlice()...)
}

// raBody is a router advertisement without options.
func raBody() []byte {
	return icmp6Bytes(icmp6(layers.ICMPv6TypeRouterAdvertisement), &layers.ICMPv6RouterAdvertisement{HopLimit: 64, RouterLifetime: 1800})
}

// rarpFrame is a RARP frame from ethSrc with opcode op (3: request, as
// QEMU announces a migrated VM) whose sender and target hardware address
// is about.
func rarpFrame(ethSrc [6]byte, op uint16, about [6]byte) []byte {
	f := serialize(ether(ethSrc, bcast, layers.EthernetType(0x8035)), gopacket.Payload(make([]byte, 46)))
	copy(f[14:22], []byte{0, 1, 8, 0, 6, 4, byte(op >> 8), byte(op)})
	copy(f[22:28], about[:])
	copy(f[32:38], about[:])
	return f
}
