package secure

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// leaseOpt is option 51, the lease time.
func leaseOpt(secs uint32) layers.DHCPOption {
	return layers.NewDHCPOption(layers.DHCPOptLeaseTime, binary.BigEndian.AppendUint32(nil, secs))
}

// serverFrame is a DHCP server's BOOTREPLY from the TAP, broadcast, for
// chaddr, leasing yiaddr, with a message type msg and the options given.
func serverFrame(chaddr [6]byte, yiaddr string, msg layers.DHCPMsgType, opts ...layers.DHCPOption) []byte {
	all := []layers.DHCPOption{layers.NewDHCPOption(layers.DHCPOptMessageType, []byte{byte(msg)})}
	all = append(all, opts...)
	return serialize(ether(tapMAC, bcast, layers.EthernetTypeIPv4), ip4(tapIP, "255.255.255.255", layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 67, DstPort: 68},
		&layers.DHCPv4{Operation: layers.DHCPOpReply, HardwareType: layers.LinkTypeEthernet, HardwareLen: 6,
			Xid: 0x1234, YourClientIP: ip(yiaddr).To4(), ClientHWAddr: net.HardwareAddr(chaddr[:]), Options: all})
}

func ackFrame(chaddr [6]byte, yiaddr string, secs uint32) []byte {
	return serverFrame(chaddr, yiaddr, layers.DHCPMsgTypeAck, leaseOpt(secs))
}

func nakFrame(chaddr [6]byte) []byte {
	return serverFrame(chaddr, "0.0.0.0", layers.DHCPMsgTypeNak)
}

// optionsAt is where a serverFrame's DHCP options begin: Ethernet, a
// 20-byte IPv4 header, UDP, the BOOTP fixed part.
const optionsAt = 14 + 20 + 8 + bootpOptions

// withOptions replaces a serverFrame's options by raw, fixing the lengths
// and checksum.
func withOptions(f []byte, raw ...byte) []byte {
	g := append(append([]byte(nil), f[:optionsAt]...), raw...)
	binary.BigEndian.PutUint16(g[14+2:], uint16(len(g)-14))
	binary.BigEndian.PutUint16(g[14+20+4:], uint16(len(g)-14-20))
	return fixIPv4Checksum(g)
}

func TestParseDHCPReply(t *testing.T) {
	ack := ackFrame(macA, ipA, 3600)
	want := DHCPReply{Type: DHCPAck, ClientMAC: macA, Addr: 198<<24 | 18<<16 | 10, LeaseSecs: 3600, HasLeaseTime: true}
	cases := []struct {
		name  string
		frame []byte
		ok    bool
		want  DHCPReply
	}{
		{"ACK", ack, true, want},
		{"ACK, infinite lease", ackFrame(macA, ipA, 0xffffffff), true,
			DHCPReply{Type: DHCPAck, ClientMAC: macA, Addr: want.Addr, LeaseSecs: 0xffffffff, HasLeaseTime: true}},
		{"ACK without lease time (to an INFORM)", serverFrame(macA, "0.0.0.0", layers.DHCPMsgTypeAck), true,
			DHCPReply{Type: DHCPAck, ClientMAC: macA}},
		{"NAK", nakFrame(macB), true, DHCPReply{Type: DHCPNak, ClientMAC: macB}},
		{"ACK, padded options", withOptions(ack, 0, 53, 1, 5, 0, 0, 51, 4, 0, 0, 0, 60, 255, 1, 2, 3), true,
			DHCPReply{Type: DHCPAck, ClientMAC: macA, Addr: want.Addr, LeaseSecs: 60, HasLeaseTime: true}},
		{"ACK, repeated identical options", withOptions(ack, 53, 1, 5, 51, 4, 0, 0, 0, 60, 53, 1, 5, 51, 4, 0, 0, 0, 60, 255), true,
			DHCPReply{Type: DHCPAck, ClientMAC: macA, Addr: want.Addr, LeaseSecs: 60, HasLeaseTime: true}},

		{"OFFER", serverFrame(macA, ipA, layers.DHCPMsgTypeOffer, leaseOpt(60)), false, DHCPReply{}},
		{"no message type", withOptions(ack, 51, 4, 0, 0, 0, 60, 255), false, DHCPReply{}},
		{"two message types", withOptions(ack, 53, 1, 5, 53, 1, 6, 255), false, DHCPReply{}},
		{"two lease times", withOptions(ack, 53, 1, 5, 51, 4, 0, 0, 0, 60, 51, 4, 0, 0, 1, 0, 255), false, DHCPReply{}},
		{"message type of length 2", withOptions(ack, 53, 2, 5, 5, 255), false, DHCPReply{}},
		{"lease time of length 3", withOptions(ack, 53, 1, 5, 51, 3, 0, 0, 60, 255), false, DHCPReply{}},
		{"no end option", withOptions(ack, 53, 1, 5, 51, 4, 0, 0, 0, 60), false, DHCPReply{}},
		{"option past the end", withOptions(ack, 53, 1, 5, 51, 9, 0, 0, 0, 60), false, DHCPReply{}},
		{"a client's request", dhcpFrame(macA, macA, ipA, layers.DHCPMsgTypeRequest, nil), false, DHCPReply{}},
		{"BOOTREQUEST from 67 to 68", mutate(ack, func(b []byte) []byte { b[optionsAt-bootpOptions] = 1; return b }), false, DHCPReply{}},
		{"hardware type 6", mutate(ack, func(b []byte) []byte { b[optionsAt-bootpOptions+1] = 6; return b }), false, DHCPReply{}},
		{"bad magic cookie", mutate(ack, func(b []byte) []byte { b[optionsAt-1] ^= 1; return b }), false, DHCPReply{}},
		{"to port 67", mutate(ack, func(b []byte) []byte { b[14+20+3] = 67; return b }), false, DHCPReply{}},
		{"from port 68", mutate(ack, func(b []byte) []byte { b[14+20+1] = 68; return b }), false, DHCPReply{}},
		{"UDP length past the datagram", mutate(ack, func(b []byte) []byte { b[14+20+4]++; return b }), false, DHCPReply{}},
		{"UDP length 7", mutate(ack, func(b []byte) []byte { b[14+20+4], b[14+20+5] = 0, 7; return b }), false, DHCPReply{}},
		{"bad IPv4 checksum", mutate(ack, func(b []byte) []byte { b[14+10] ^= 1; return b }), false, DHCPReply{}},
		{"IPv4 version 5", fixIPv4Checksum(mutate(ack, func(b []byte) []byte { b[14] = 0x55; return b })), false, DHCPReply{}},
		{"more fragments", fixIPv4Checksum(mutate(ack, func(b []byte) []byte { b[14+6] = 0x20; return b })), false, DHCPReply{}},
		{"later fragment", fixIPv4Checksum(mutate(ack, func(b []byte) []byte { b[14+7] = 1; return b })), false, DHCPReply{}},
		{"IPv4 total length past the frame", fixIPv4Checksum(mutate(ack, func(b []byte) []byte { b[14+3]++; return b })), false, DHCPReply{}},
		{"TCP", tcpFrame(tapMAC, tapIP, ipA), false, DHCPReply{}},
		{"ARP", arpFrame(tapMAC, layers.ARPReply, tapMAC, tapIP, ipA), false, DHCPReply{}},
		{"VLAN-tagged ACK", vlanFrame(layers.EthernetTypeIPv4, ack[14:]), false, DHCPReply{}},
		{"empty", nil, false, DHCPReply{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseDHCPReply(tc.frame)
			if ok != tc.ok || ok && got != tc.want {
				t.Fatalf("ParseDHCPReply = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	// Every prefix of a reply is refused: the IPv4 total length or the
	// UDP length claims bytes that are not there, or the options end early.
	for n := range ack {
		if _, ok := ParseDHCPReply(ack[:n]); ok {
			t.Errorf("the ACK's first %d of %d bytes parsed", n, len(ack))
		}
	}
}

func TestDHCPReleased(t *testing.T) {
	rel := dhcpFrame(macA, macA, ipA, layers.DHCPMsgTypeRelease, nil)
	binary.BigEndian.PutUint32(rel[14+20+8+bootpCiaddr:], 198<<24|18<<16|10)
	for _, tc := range []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"release", rel, 198<<24 | 18<<16 | 10},
		{"request", dhcpFrame(macA, macA, ipA, layers.DHCPMsgTypeRequest, nil), 0},
		{"discover with a client id", dhcpFrame(macA, macA, "0.0.0.0", layers.DHCPMsgTypeDiscover, &macA), 0},
	} {
		r, got := checkDHCPClient(tc.frame[14+20+8:], macA[:])
		if r != Pass || got != tc.want {
			t.Errorf("%s: checkDHCPClient = %v, released %#x, want pass, %#x", tc.name, r, got, tc.want)
		}
	}
}

// FuzzDHCPReply: the parser never panics, and whatever it accepts
// gopacket's own DHCPv4 decoder reads the same way: a DHCP reply from port
// 67 to port 68 of the type, client, address and lease time it reported.
// The seeds (every reply of TestParseDHCPReply) run as an ordinary test.
func FuzzDHCPReply(f *testing.F) {
	ack := ackFrame(macA, ipA, 3600)
	for _, s := range [][]byte{
		ack, ackFrame(macB, ipB, 0xffffffff), nakFrame(macA),
		serverFrame(macA, "0.0.0.0", layers.DHCPMsgTypeAck),
		serverFrame(macA, ipA, layers.DHCPMsgTypeOffer, leaseOpt(60)),
		withOptions(ack, 0, 53, 1, 5, 0, 51, 4, 0, 0, 0, 60, 255),
		withOptions(ack, 53, 1, 5, 53, 1, 6, 255),
		dhcpFrame(macA, macA, ipA, layers.DHCPMsgTypeRelease, nil),
		tcpFrame(tapMAC, tapIP, ipA),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, ok := ParseDHCPReply(frame)
		if !ok {
			return
		}
		if m.Type != DHCPAck && m.Type != DHCPNak {
			t.Fatalf("accepted message type %d", m.Type)
		}
		pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		d, _ := pkt.Layer(layers.LayerTypeDHCPv4).(*layers.DHCPv4)
		if udp == nil || d == nil {
			t.Fatalf("accepted a frame gopacket does not decode as DHCPv4 over UDP: %v", pkt)
		}
		if udp.SrcPort != 67 || udp.DstPort != 68 || d.Operation != layers.DHCPOpReply {
			t.Fatalf("accepted ports %d > %d, op %v", udp.SrcPort, udp.DstPort, d.Operation)
		}
		if [6]byte(d.ClientHWAddr) != m.ClientMAC || binary.BigEndian.Uint32(d.YourClientIP.To4()) != m.Addr {
			t.Fatalf("chaddr %v yiaddr %v, parsed %+v", d.ClientHWAddr, d.YourClientIP, m)
		}
		var typ, lease []byte
		for _, o := range d.Options {
			switch {
			case o.Type == layers.DHCPOptMessageType && typ == nil:
				typ = o.Data
			case o.Type == layers.DHCPOptLeaseTime && lease == nil:
				lease = o.Data
			}
		}
		if len(typ) != 1 || typ[0] != m.Type {
			t.Fatalf("gopacket's message type % x, parsed %d", typ, m.Type)
		}
		if (lease != nil) != m.HasLeaseTime || lease != nil && binary.BigEndian.Uint32(lease) != m.LeaseSecs {
			t.Fatalf("gopacket's lease time % x, parsed %+v", lease, m)
		}
	})
}

// dhcp6Msg is a DHCPv6 message of type typ with one IA_NA holding an
// IAADDR for each address, valid for secs.
func dhcp6Msg(typ byte, secs uint32, addrs ...string) []byte {
	var ia []byte
	ia = append(ia, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0) // IAID 1, T1 and T2 0
	for _, a := range addrs {
		ia = binary.BigEndian.AppendUint16(ia, dhcp6OptIAAddr)
		ia = binary.BigEndian.AppendUint16(ia, 24)
		ia = append(ia, ip(a).To16()...)
		ia = binary.BigEndian.AppendUint32(ia, secs) // preferred
		ia = binary.BigEndian.AppendUint32(ia, secs) // valid
	}
	b := []byte{typ, 0x12, 0x34, 0x56}
	b = append(b, 0, 1, 0, 4, 0xde, 0xad, 0xbe, 0xef) // a client id
	b = binary.BigEndian.AppendUint16(b, dhcp6OptIANA)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ia)))
	return append(b, ia...)
}

// dhcp6ReplyFrame is the host's DHCPv6 Reply to the client MAC to.
func dhcp6ReplyFrame(to [6]byte, secs uint32, addrs ...string) []byte {
	return serialize(ether(tapMAC, to, layers.EthernetTypeIPv6), ip6(tapLL6, llA, layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 547, DstPort: 546}, gopacket.Payload(dhcp6Msg(dhcp6Reply, secs, addrs...)))
}

// dhcp6ClientFrame is a client's DHCPv6 message of type typ to the servers.
func dhcp6ClientFrame(from [6]byte, src string, typ byte, addrs ...string) []byte {
	return serialize(ether(from, mac("33:33:00:01:00:02"), layers.EthernetTypeIPv6), ip6(src, "ff02::1:2", layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 546, DstPort: 547}, gopacket.Payload(dhcp6Msg(typ, 0, addrs...)))
}

func TestParseDHCPv6Reply(t *testing.T) {
	reply := dhcp6ReplyFrame(macA, 3600, ip6A, "2001:db8::b")
	two := DHCPv6Reply{ClientMAC: macA, NLeases: 2}
	two.Leases[0] = DHCPv6Lease{Addr: [16]byte(ip(ip6A).To16()), ValidSecs: 3600}
	two.Leases[1] = DHCPv6Lease{Addr: [16]byte(ip("2001:db8::b").To16()), ValidSecs: 3600}
	five := DHCPv6Reply{ClientMAC: macA, NLeases: MaxDHCPv6Addrs}
	for i := range five.Leases {
		five.Leases[i] = DHCPv6Lease{Addr: [16]byte(ip(ip6A).To16()), ValidSecs: 60}
	}
	cases := []struct {
		name  string
		frame []byte
		ok    bool
		want  DHCPv6Reply
	}{
		{"reply", reply, true, two},
		{"reply without IA_NA", serialize(ether(tapMAC, macA, layers.EthernetTypeIPv6), ip6(tapLL6, llA, layers.IPProtocolUDP),
			&layers.UDP{SrcPort: 547, DstPort: 546}, gopacket.Payload([]byte{dhcp6Reply, 1, 2, 3, 0, 13, 0, 2, 0, 0})), true, DHCPv6Reply{ClientMAC: macA}},
		{"five addresses, four read", dhcp6ReplyFrame(macA, 60, ip6A, ip6A, ip6A, ip6A, ip6A), true, five},
		{"advertise", mutate(reply, func(b []byte) []byte { b[14+40+8] = 2; return b }), false, DHCPv6Reply{}},
		{"to a multicast MAC", dhcp6ReplyFrame(mac("33:33:00:00:00:01"), 60, ip6A), false, DHCPv6Reply{}},
		{"from port 546", mutate(reply, func(b []byte) []byte { b[14+40+1] = 0x22; return b }), false, DHCPv6Reply{}},
		{"IA_NA past the end", mutate(reply, func(b []byte) []byte { b[14+40+8+4+8+3] += 1; return b }), false, DHCPv6Reply{}},
		{"IAADDR of 23 bytes", withIAAddrLen(reply, 23), false, DHCPv6Reply{}},
		{"UDP length past the payload", mutate(reply, func(b []byte) []byte { b[14+40+5]++; return b }), false, DHCPv6Reply{}},
		{"payload length past the frame", mutate(reply, func(b []byte) []byte { b[14+5]++; return b }), false, DHCPv6Reply{}},
		{"IPv4 reply", ackFrame(macA, ipA, 60), false, DHCPv6Reply{}},
		{"a client's release", dhcp6ClientFrame(macA, llA, dhcp6Release, ip6A), false, DHCPv6Reply{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseDHCPv6Reply(tc.frame)
			if ok != tc.ok || ok && got != tc.want {
				t.Fatalf("ParseDHCPv6Reply = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	for n := range reply {
		if _, ok := ParseDHCPv6Reply(reply[:n]); ok {
			t.Errorf("the reply's first %d of %d bytes parsed", n, len(reply))
		}
	}
}

// withIAAddrLen sets the first IAADDR's length field of a dhcp6ReplyFrame.
func withIAAddrLen(f []byte, n uint16) []byte {
	return mutate(f, func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[14+40+8+4+8+4+12+2:], n)
		return b
	})
}

// FuzzDHCPv6Reply: the parser never panics, reads only replies from port
// 547 to port 546 for a unicast MAC, and every address it returns lies in
// the frame. The seeds run as an ordinary test.
func FuzzDHCPv6Reply(f *testing.F) {
	for _, s := range [][]byte{
		dhcp6ReplyFrame(macA, 3600, ip6A, "2001:db8::b"), dhcp6ReplyFrame(macA, 0, ip6A),
		dhcp6ReplyFrame(macA, 60, ip6A, ip6A, ip6A, ip6A, ip6A), dhcp6ClientFrame(macA, llA, dhcp6Release, ip6A),
		udp6Frame(macA, ip6A, tap6),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, ok := ParseDHCPv6Reply(frame)
		if !ok {
			return
		}
		if frame[0]&1 != 0 || m.ClientMAC != [6]byte(frame[0:6]) {
			t.Fatalf("client %x from destination %x", m.ClientMAC, frame[0:6])
		}
		if binary.BigEndian.Uint16(frame[14+40:]) != 547 || binary.BigEndian.Uint16(frame[14+40+2:]) != 546 || frame[14+40+8] != dhcp6Reply {
			t.Fatalf("accepted % x", frame[14+40:14+40+9])
		}
		if m.NLeases < 0 || m.NLeases > MaxDHCPv6Addrs {
			t.Fatalf("%d leases", m.NLeases)
		}
		for _, l := range m.Leases[:m.NLeases] {
			if !bytes.Contains(frame, l.Addr[:]) {
				t.Fatalf("address %x not in the frame", l.Addr)
			}
		}
		p := newTestPolicy(t, dhcpConfig(true))
		p.SnoopReply6(&m, portA, 1)
		if p.NumLeases() > m.NLeases {
			t.Fatalf("%d leases from %d addresses", p.NumLeases(), m.NLeases)
		}
	})
}
