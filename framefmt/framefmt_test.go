package framefmt

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	ts     = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	prefix = "2026-01-02T03:04:05.000006Z "

	mac1  = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	mac2  = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	bcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ip1   = net.IP{198, 18, 0, 1}
	ip2   = net.IP{198, 18, 0, 2}
	ip61  = net.ParseIP("2001:db8::1")
	ip62  = net.ParseIP("2001:db8::2")
)

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return bytes.Clone(buf.Bytes())
}

func eth(src, dst net.HardwareAddr, typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: typ}
}

func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: ip1, DstIP: ip2}
}

func ip6(next layers.IPProtocol, src, dst net.IP) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: src, DstIP: dst}
}

func arp(op uint16, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP) *layers.ARP {
	return &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
		SourceHwAddress: sha, SourceProtAddress: spa, DstHwAddress: tha, DstProtAddress: tpa,
	}
}

type lineCase struct {
	name  string
	frame []byte
	want  string // without the timestamp prefix
	// allocs is set where gopacket allocates an error message for the frame.
	allocs bool
}

func cases(t testing.TB) []lineCase {
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	arpReq := serialize(t, eth(mac1, bcast, layers.EthernetTypeARP), arp(layers.ARPRequest, mac1, ip1, zero, ip2))

	tcpSynAck := func() []byte {
		ip := ip4(layers.IPProtocolTCP)
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, ACK: true, Window: 1000}
		tcp.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(mac1, mac2, layers.EthernetTypeIPv4), ip, tcp)
	}()
	tcpData := func() []byte {
		ip := ip4(layers.IPProtocolTCP)
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, PSH: true, ACK: true, Window: 1000}
		tcp.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(mac1, mac2, layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload("0123456789"))
	}()
	tcpFlags := func(f func(*layers.TCP)) []byte {
		ip := ip4(layers.IPProtocolTCP)
		tcp := &layers.TCP{SrcPort: 1, DstPort: 2}
		f(tcp)
		tcp.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(mac1, mac2, layers.EthernetTypeIPv4), ip, tcp)
	}
	udp4 := func(e ...gopacket.SerializableLayer) []byte {
		ip := ip4(layers.IPProtocolUDP)
		udp := &layers.UDP{SrcPort: 5000, DstPort: 53}
		udp.SetNetworkLayerForChecksum(ip)
		return serialize(t, append(e, ip, udp, gopacket.Payload("hello"))...)
	}
	icmp4 := func(typ, code uint8) []byte {
		return serialize(t, eth(mac1, mac2, layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: 7, Seq: 1},
			gopacket.Payload("abcdefgh"))
	}
	udp6 := func() []byte {
		ip := ip6(layers.IPProtocolUDP, ip61, ip62)
		udp := &layers.UDP{SrcPort: 1234, DstPort: 5678}
		udp.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(mac1, mac2, layers.EthernetTypeIPv6), ip, udp, gopacket.Payload("abcd"))
	}()
	echo6 := func() []byte {
		ip := ip6(layers.IPProtocolICMPv6, ip61, ip62)
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
		icmp.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(mac1, mac2, layers.EthernetTypeIPv6), ip, icmp,
			&layers.ICMPv6Echo{Identifier: 9, SeqNumber: 3}, gopacket.Payload("abcd"))
	}()
	ns6 := func() []byte {
		ip := ip6(layers.IPProtocolICMPv6, net.ParseIP("fe80::1"), net.ParseIP("ff02::1:ff00:2"))
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
		icmp.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(mac1, net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 2}, layers.EthernetTypeIPv6), ip, icmp,
			gopacket.Payload(make([]byte, 20)))
	}()
	tags := func(n int) []byte {
		ls := []gopacket.SerializableLayer{eth(mac1, bcast, layers.EthernetTypeQinQ)}
		for i := 1; i <= n; i++ {
			next := layers.EthernetTypeDot1Q
			if i == n {
				next = layers.EthernetTypeARP
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(i * 10), Type: next})
		}
		return serialize(t, append(ls, arp(layers.ARPRequest, mac1, ip1, zero, ip2))...)
	}
	raw := func(typ layers.EthernetType, n int) []byte {
		return serialize(t, eth(mac1, mac2, typ), gopacket.Payload(make([]byte, n)))
	}
	ipRaw := func(proto layers.IPProtocol, ip *layers.IPv4) []byte {
		if ip == nil {
			ip = ip4(proto)
		}
		return serialize(t, eth(mac1, mac2, layers.EthernetTypeIPv4), ip, gopacket.Payload("abcdefghijklmnop"))
	}
	ipip := func() []byte {
		inner := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: net.IP{198, 19, 0, 1}, DstIP: net.IP{198, 19, 0, 2}}
		udp := &layers.UDP{SrcPort: 9, DstPort: 9}
		udp.SetNetworkLayerForChecksum(inner)
		return serialize(t, eth(mac1, mac2, layers.EthernetTypeIPv4), ip4(layers.IPProtocolIPv4), inner, udp)
	}()
	llc := append(append(append([]byte{}, mac2...), mac1...), 0x00, 0x2e)
	llc = append(llc, 0x42, 0x42, 0x03)
	llc = append(llc, make([]byte, 43)...)
	badIHL := bytes.Clone(tcpSynAck)
	badIHL[14] = 0x43
	ip6len0 := append(append(append([]byte{}, mac2...), mac1...), 0x86, 0xdd,
		0x60, 0, 0, 0, 0, 0, 59, 64)
	ip6len0 = append(ip6len0, ip61...)
	ip6len0 = append(ip6len0, ip62...)

	arpLine := " request who-has 198.18.0.2 tell 198.18.0.1 (02:00:00:00:00:01)"
	return []lineCase{
		{name: "arp request", frame: arpReq,
			want: "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP len 60:" + arpLine},
		{name: "arp reply",
			frame: serialize(t, eth(mac2, mac1, layers.EthernetTypeARP), arp(layers.ARPReply, mac2, ip2, mac1, ip1)),
			want:  "02:00:00:00:00:02 > 02:00:00:00:00:01 ARP len 60: reply 198.18.0.2 is-at 02:00:00:00:00:02 to 198.18.0.1"},
		{name: "arp other op",
			frame: serialize(t, eth(mac2, mac1, layers.EthernetTypeARP), arp(3, mac2, ip2, mac1, ip1)),
			want:  "02:00:00:00:00:02 > 02:00:00:00:00:01 ARP len 60: op 3 sender 198.18.0.2 (02:00:00:00:00:02) target 198.18.0.1"},
		{name: "tcp syn-ack", frame: tcpSynAck,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1:40000 > 198.18.0.2:80 TCP [S.]"},
		{name: "tcp data", frame: tcpData,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 64: 198.18.0.1:40000 > 198.18.0.2:80 TCP [P.]"},
		{name: "tcp no flags", frame: tcpFlags(func(*layers.TCP) {}),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1:1 > 198.18.0.2:2 TCP [none]"},
		{name: "tcp all flags", frame: tcpFlags(func(p *layers.TCP) {
			p.FIN, p.SYN, p.RST, p.PSH, p.ACK, p.URG, p.ECE, p.CWR = true, true, true, true, true, true, true, true
		}),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1:1 > 198.18.0.2:2 TCP [FSRP.UEW]"},
		// gopacket pads to the 60-byte minimum: the IPv4 total length must cut it off.
		{name: "udp in a padded frame", frame: udp4(eth(mac1, mac2, layers.EthernetTypeIPv4)),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1:5000 > 198.18.0.2:53 UDP"},
		{name: "icmp echo", frame: icmp4(8, 0),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 ICMP echo-request id 7 seq 1"},
		{name: "icmp echo reply", frame: icmp4(0, 0),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 ICMP echo-reply id 7 seq 1"},
		{name: "icmp unreachable", frame: icmp4(3, 3),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 ICMP dest-unreachable code 3"},
		{name: "icmp unknown type", frame: icmp4(42, 1),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 ICMP type 42 code 1"},
		{name: "ipv6 udp", frame: udp6,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv6 len 66: [2001:db8::1]:1234 > [2001:db8::2]:5678 UDP"},
		{name: "icmpv6 echo", frame: echo6,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv6 len 66: 2001:db8::1 > 2001:db8::2 ICMPv6 echo-request id 9 seq 3"},
		{name: "icmpv6 neighbor solicitation", frame: ns6,
			want: "02:00:00:00:00:01 > 33:33:ff:00:00:02 IPv6 len 78: fe80::1 > ff02::1:ff00:2 ICMPv6 neighbor-solicitation"},
		{name: "vlan", frame: udp4(eth(mac1, mac2, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeIPv4}),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 100 IPv4 len 60: 198.18.0.1:5000 > 198.18.0.2:53 UDP"},
		{name: "qinq", frame: tags(2),
			want: "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff vlan 10 vlan 20 ARP len 60:" + arpLine},
		{name: "many tags", frame: tags(6),
			want: "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff vlan 10 vlan 20 vlan 30 vlan 40 (+2 tags) ARP len 66:" + arpLine},
		{name: "unknown ethertype", frame: raw(0x88b5, 46),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 0x88b5 len 60"},
		{name: "lldp", frame: raw(layers.EthernetTypeLinkLayerDiscovery, 46),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 LinkLayerDiscovery len 60"},
		{name: "llc", frame: llc,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 LLC len 60"},
		{name: "gre", frame: ipRaw(layers.IPProtocolGRE, nil),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 GRE"},
		{name: "unnamed protocol", frame: ipRaw(253, nil),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 proto 253"},
		{name: "ip in ip keeps the outer header", frame: ipip,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 62: 198.18.0.1 > 198.18.0.2 IPv4"},
		{name: "first fragment", frame: ipRaw(0, &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: ip1, DstIP: ip2, Id: 77, Flags: layers.IPv4MoreFragments}),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 UDP frag id 77 off 0 MF"},
		{name: "last fragment", frame: ipRaw(0, &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: ip1, DstIP: ip2, Id: 77, FragOffset: 2}),
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 UDP frag id 77 off 16"},

		{name: "runt", frame: arpReq[:10], allocs: true,
			want: "len 10: truncated Ethernet header"},
		{name: "header only", frame: tcpSynAck[:14],
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 14: truncated"},
		{name: "ipv4 header cut", frame: tcpSynAck[:30], allocs: true,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 30: truncated"},
		{name: "tcp header cut", frame: tcpSynAck[:44], allocs: true,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 44: 198.18.0.1 > 198.18.0.2 TCP truncated"},
		{name: "tcp payload cut", frame: tcpData[:59],
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 59: 198.18.0.1:40000 > 198.18.0.2:80 TCP [P.] truncated"},
		{name: "arp cut", frame: arpReq[:30], allocs: true,
			want: "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP len 30: truncated"},
		{name: "vlan tag cut", frame: tags(1)[:16], allocs: true,
			want: "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff Dot1Q len 16: truncated"},
		{name: "icmpv6 echo cut", frame: echo6[:14+40+4],
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv6 len 58: 2001:db8::1 > 2001:db8::2 ICMPv6 echo-request truncated"},
		{name: "bad ihl", frame: badIHL, allocs: true,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: malformed"},
		{name: "ipv6 length 0", frame: ip6len0, allocs: true,
			want: "02:00:00:00:00:01 > 02:00:00:00:00:02 IPv6 len 54: malformed"},
	}
}

func TestLine(t *testing.T) {
	d := NewDecoder()
	for _, c := range cases(t) {
		t.Run(c.name, func(t *testing.T) {
			want := prefix + c.want
			if got := string(d.Line(nil, ts, c.frame)); got != want {
				t.Errorf("Decoder.Line:\n got %q\nwant %q", got, want)
			}
			if got := string(Line([]byte("> "), ts, c.frame)); got != "> "+want {
				t.Errorf("Line:\n got %q\nwant %q", got, "> "+want)
			}
		})
	}
}

// A decoder's state from one frame must not leak into the next line.
func TestDecoderReuse(t *testing.T) {
	cs := cases(t)
	d := NewDecoder()
	for range 2 {
		for i := len(cs) - 1; i >= 0; i-- {
			if got, want := string(d.Line(nil, ts, cs[i].frame)), prefix+cs[i].want; got != want {
				t.Errorf("%s after other frames:\n got %q\nwant %q", cs[i].name, got, want)
			}
		}
	}
}

func TestLineTimeZone(t *testing.T) {
	at := time.Date(2026, 7, 1, 23, 59, 59, 999999999, time.FixedZone("", 2*3600))
	got := string(Line(nil, at, nil))
	if want := "2026-07-01T23:59:59.999999+02:00 len 0: truncated Ethernet header"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDecoderLineAllocs(t *testing.T) {
	d := NewDecoder()
	buf := make([]byte, 0, 512)
	for _, c := range cases(t) {
		if c.allocs {
			continue
		}
		if n := testing.AllocsPerRun(100, func() { buf = d.Line(buf[:0], ts, c.frame) }); n != 0 {
			t.Errorf("%s: %v allocations per line, want 0", c.name, n)
		}
	}
}

func FuzzLine(f *testing.F) {
	for _, c := range cases(f) {
		f.Add(c.frame)
	}
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, frame []byte) {
		line := d.Line(nil, ts, frame)
		if !utf8.Valid(line) {
			t.Fatalf("line is not UTF-8: %q", line)
		}
		for _, c := range line {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("line holds byte %#x: %q", c, line)
			}
		}
		if !strings.HasPrefix(string(line), prefix) {
			t.Fatalf("line does not start with the time: %q", line)
		}
		if again := Line(nil, ts, frame); !bytes.Equal(again, line) {
			t.Fatalf("Line and a reused Decoder disagree:\n%q\n%q", again, line)
		}
	})
}

func BenchmarkDecoderLine(b *testing.B) {
	ip := ip4(layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, PSH: true, ACK: true}
	tcp.SetNetworkLayerForChecksum(ip)
	frame := serialize(b, eth(mac1, mac2, layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload(make([]byte, 1460)))
	d := NewDecoder()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		buf = d.Line(buf[:0], ts, frame)
	}
}

func TestAppendTimeMatchesTimeFormat(t *testing.T) {
	zones := []*time.Location{
		time.UTC, time.FixedZone("", 2*3600), time.FixedZone("", -(3*3600 + 30*60)),
		time.FixedZone("", 5*3600+45*60), time.FixedZone("", -14*3600),
		// Offsets with seconds and years past 9999 take the time package's own path.
		time.FixedZone("LMT", 561), time.FixedZone("", -(9*3600 + 30*60 + 7)),
	}
	instants := []time.Time{
		time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 123456789, time.UTC),
		time.Date(12345, 6, 7, 8, 9, 10, 11000, time.UTC),
		time.Unix(0, 0),
	}
	for _, z := range zones {
		for _, at := range instants {
			at := at.In(z)
			if got, want := string(appendTime(nil, at)), at.Format(TimeLayout); got != want {
				t.Errorf("appendTime(%v) = %q, want %q", at, got, want)
			}
		}
	}
}
