package gso

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// frameSpec describes a test frame; buildFrame makes it with gopacket, so
// the frames the tests feed in do not share this package's idea of a header.
type frameSpec struct {
	v6        bool
	udp       bool
	vlans     int    // 0, 1 or 2 tags in front of the IP header
	ipOptions bool   // IPv4: a 4-byte Router Alert option (IHL 6)
	hopByHop  bool   // IPv6: an 8-byte hop-by-hop header before TCP/UDP
	tcpOpts   bool   // TCP: timestamps (data offset 8, as Linux sends)
	flags     uint8  // TCP flags; ACK if zero
	seq       uint32 // TCP sequence number of the first payload byte
	ipID      uint16
	payload   []byte
}

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
	ip4A = net.IP{198, 18, 0, 10}
	ip4B = net.IP{198, 18, 0, 11}
	ip6A = net.ParseIP("2001:2::a")
	ip6B = net.ParseIP("2001:2::b")
)

func randomPayload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// buildFrame returns the frame with full, correct checksums and lengths.
func buildFrame(t testing.TB, s frameSpec) []byte {
	t.Helper()
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
	if s.v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
	}
	ls = append(ls, eth)
	switch s.vlans {
	case 1:
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 10, Type: eth.EthernetType})
		eth.EthernetType = layers.EthernetTypeDot1Q
	case 2:
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 11, Type: eth.EthernetType})
		eth.EthernetType = layers.EthernetTypeQinQ
	}
	proto := layers.IPProtocolTCP
	if s.udp {
		proto = layers.IPProtocolUDP
	}
	var netLayer gopacket.NetworkLayer
	if s.v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: ip6A, DstIP: ip6B, NextHeader: proto, TrafficClass: 0x20}
		ls = append(ls, ip)
		netLayer = ip
		if s.hopByHop {
			ip.NextHeader = layers.IPProtocolIPv6HopByHop
			// next header, length 0 (8 bytes), PadN of 4 bytes of zeros.
			ls = append(ls, gopacket.Payload{byte(proto), 0, 1, 4, 0, 0, 0, 0})
		}
	} else {
		ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: ip4A, DstIP: ip4B, Protocol: proto, Id: s.ipID, Flags: layers.IPv4DontFragment, TOS: 0x10}
		if s.ipOptions {
			ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
		}
		ls = append(ls, ip)
		netLayer = ip
	}
	if s.udp {
		u := &layers.UDP{SrcPort: 40000, DstPort: 40001}
		if err := u.SetNetworkLayerForChecksum(netLayer); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, u)
	} else {
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 5001, Seq: s.seq, Ack: 0x01020304, Window: 502}
		f := s.flags
		if f == 0 {
			f = 0x10
		}
		tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH = f&0x01 != 0, f&0x02 != 0, f&0x04 != 0, f&0x08 != 0
		tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR = f&0x10 != 0, f&0x20 != 0, f&0x40 != 0, f&0x80 != 0
		if s.tcpOpts {
			tcp.Options = []layers.TCPOption{
				{OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 1, 0, 0, 0, 2, 0}},
			}
		}
		if err := tcp.SetNetworkLayerForChecksum(netLayer); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, tcp)
	}
	ls = append(ls, gopacket.Payload(s.payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// decoded is what gopacket makes of a frame.
type decoded struct {
	ip4     *layers.IPv4
	ip6     *layers.IPv6
	tcp     *layers.TCP
	udp     *layers.UDP
	payload []byte
}

// decode parses a frame with gopacket; ok is false unless it is a complete
// TCP or UDP packet over IPv4 or IPv6.
func decode(frame []byte) (d decoded, p gopacket.Packet, ok bool) {
	p = gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	// gopacket guesses applications from ports (DNS on 53, VXLAN on
	// 4789...) and records a payload it cannot parse as an error; only
	// errors up to the transport header matter here.
	if p.ErrorLayer() != nil && p.TransportLayer() == nil {
		return d, p, false
	}
	d.ip4, _ = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	d.ip6, _ = p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	d.tcp, _ = p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	d.udp, _ = p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if (d.ip4 == nil) == (d.ip6 == nil) || (d.tcp == nil) == (d.udp == nil) {
		return d, p, false
	}
	var nl gopacket.NetworkLayer = d.ip4
	if d.ip6 != nil {
		nl = d.ip6
	}
	if d.tcp != nil {
		d.tcp.SetNetworkLayerForChecksum(nl)
		d.payload = d.tcp.Payload
	} else {
		d.udp.SetNetworkLayerForChecksum(nl)
		d.payload = d.udp.Payload
	}
	return d, p, true
}

// verifySegment fails the test unless seg is a valid frame: gopacket decodes
// it, every length field agrees with the bytes, and every checksum (IPv4
// header, TCP/UDP) verifies. It returns what gopacket decoded.
func verifySegment(t testing.TB, seg []byte) decoded {
	t.Helper()
	d, p, ok := decode(seg)
	if !ok {
		t.Fatalf("segment does not decode as TCP/UDP over IP: %v\n%x", p.ErrorLayer(), seg)
	}
	verifyChecksums(t, d)
	// A UDP checksum of 0 would mean "none" and pass any verification.
	if d.udp != nil && d.udp.Checksum == 0 {
		t.Fatalf("UDP checksum 0: the segment claims to have none")
	}
	if d.ip4 != nil {
		end := len(seg) - len(d.ip4.Contents) - len(d.ip4.Payload)
		if int(d.ip4.Length) != len(d.ip4.Contents)+len(d.ip4.Payload) || end != ipStart(seg) {
			t.Fatalf("IPv4 total length %d does not cover the segment's %d bytes of IP", d.ip4.Length, len(seg)-ipStart(seg))
		}
	} else if int(d.ip6.Length) != len(seg)-ipStart(seg)-40 {
		t.Fatalf("IPv6 payload length %d, segment has %d bytes after the IPv6 header", d.ip6.Length, len(seg)-ipStart(seg)-40)
	}
	if d.udp != nil && int(d.udp.Length) != 8+len(d.payload) {
		t.Fatalf("UDP length %d, payload %d", d.udp.Length, len(d.payload))
	}
	return d
}

// ipStart is where the IP header starts: after the Ethernet header and any
// VLAN tags (test frames only).
func ipStart(frame []byte) int {
	off := 14
	for et := binary.BigEndian.Uint16(frame[12:]); et == 0x8100 || et == 0x88a8; et = binary.BigEndian.Uint16(frame[off-2:]) {
		off += 4
	}
	return off
}

// segmentBuffers returns n buffers of size bytes each.
func segmentBuffers(n, size int) ([][]byte, []int) {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
	}
	return out, make([]int, n)
}

// naiveChecksum is RFC 1071 written the slow, obvious way, as a reference
// for the fast one.
func naiveChecksum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// verifyChecksums fails the test unless the IPv4 header checksum (if any)
// and the TCP/UDP checksum verify, as gopacket computes them.
func verifyChecksums(t testing.TB, d decoded) {
	t.Helper()
	if d.ip4 != nil {
		if err, res := d.ip4.VerifyChecksum(); err != nil || !res.Valid {
			t.Fatalf("IPv4 header checksum %#04x, want %#04x (%v)", res.Actual, res.Correct, err)
		}
	}
	verifyL4Checksum(t, d)
}

func verifyL4Checksum(t testing.TB, d decoded) {
	t.Helper()
	var err error
	var res gopacket.ChecksumVerificationResult
	if d.tcp != nil {
		err, res = d.tcp.VerifyChecksum()
	} else {
		err, res = d.udp.VerifyChecksum()
	}
	if err != nil || !res.Valid {
		t.Fatalf("L4 checksum %#04x, want %#04x (%v)", res.Actual, res.Correct, err)
	}
}
