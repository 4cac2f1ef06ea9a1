package secure

import (
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// headLen is the engine's split point (engine.splitHead), where the tests
// cut frames.
const headLen = 128

// FuzzHeadDecides: when HeadDecides passes a frame's first headLen bytes,
// no byte after them changes what the checks say: the frame with those
// bytes flipped gets the same verdicts, with the same bindings. The seeds
// are the rule table's frames and long ones of every kind, padded past
// headLen with their lengths fixed.
func FuzzHeadDecides(f *testing.F) {
	addSeeds(f, true)
	pad := gopacket.Payload(make([]byte, 300))
	for _, frame := range [][]byte{
		serialize(ether(macA, tapMAC, layers.EthernetTypeIPv4), ip4(ipA, tapIP, layers.IPProtocolTCP),
			&layers.TCP{SrcPort: 40000, DstPort: 22, Seq: 1, ACK: true, Window: 512}, pad),
		serialize(ether(macA, tapMAC, layers.EthernetTypeIPv4), ip4(ipA, tapIP, layers.IPProtocolUDP),
			&layers.UDP{SrcPort: 5000, DstPort: 53}, pad),
		serialize(ether(macA, tapMAC, layers.EthernetTypeIPv4), ip4(ipA, tapIP, layers.IPProtocolUDP),
			&layers.UDP{SrcPort: 68, DstPort: 67}, pad),
		serialize(ether(macA, tapMAC, layers.EthernetTypeIPv6), ip6(llA, "fe80::1", layers.IPProtocolUDP),
			&layers.UDP{SrcPort: 546, DstPort: 547}, pad),
		serialize(ether(macA, tapMAC, layers.EthernetTypeIPv6), ip6(llA, "fe80::1", layers.IPProtocolTCP),
			&layers.TCP{SrcPort: 1, DstPort: 2}, pad),
		serialize(ether(macA, tapMAC, layers.EthernetTypeIPv4), ip4(ipA, tapIP, layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0)}, pad),
	} {
		f.Add(frame, true)
	}
	f.Fuzz(func(t *testing.T, frame []byte, v6 bool) {
		if len(frame) <= headLen || !HeadDecides(frame[:headLen]) {
			return
		}
		other := append([]byte(nil), frame...)
		for i := headLen; i < len(other); i++ {
			other[i] ^= 0xff
		}
		r1, tap1, b1 := judgeOnce(t, frame, v6)
		r2, tap2, b2 := judgeOnce(t, other, v6)
		if r1 != r2 || tap1 != tap2 || b1 != b2 {
			t.Fatalf("bytes past the head changed the verdict: %v/%v/%d, then %v/%v/%d, frame % x", r1, tap1, b1, r2, tap2, b2, frame)
		}
	})
}

// judgeOnce is FromClient and ToTap on a fresh policy with leases off,
// and the bindings it then holds.
func judgeOnce(t *testing.T, frame []byte, v6 bool) (Reason, Reason, int) {
	p := newTestPolicy(t, testConfig(v6))
	c := p.NewChecker()
	r := c.FromClient(frame, portA, 1)
	tap := c.ToTap()
	_ = c.Describe()
	return r, tap, p.NumBindings()
}

// The frames most traffic is made of are decided by their heads; those
// the policy reads further into are not.
func TestHeadDecides(t *testing.T) {
	long := func(ls ...gopacket.SerializableLayer) []byte {
		return serialize(append(ls, gopacket.Payload(make([]byte, 300)))...)[:headLen]
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"tcp", long(ether(macA, tapMAC, layers.EthernetTypeIPv4), ip4(ipA, tapIP, layers.IPProtocolTCP), &layers.TCP{SrcPort: 1, DstPort: 2}), true},
		{"udp", long(ether(macA, tapMAC, layers.EthernetTypeIPv4), ip4(ipA, tapIP, layers.IPProtocolUDP), &layers.UDP{SrcPort: 1, DstPort: 2}), true},
		{"tcp6", long(ether(macA, tapMAC, layers.EthernetTypeIPv6), ip6(llA, "fe80::1", layers.IPProtocolTCP), &layers.TCP{SrcPort: 1, DstPort: 2}), true},
		{"dhcp", long(ether(macA, tapMAC, layers.EthernetTypeIPv4), ip4(ipA, tapIP, layers.IPProtocolUDP), &layers.UDP{SrcPort: 68, DstPort: 67}), false},
		{"dhcp6", long(ether(macA, tapMAC, layers.EthernetTypeIPv6), ip6(llA, "fe80::1", layers.IPProtocolUDP), &layers.UDP{SrcPort: 546, DstPort: 547}), false},
		{"icmp6", long(ether(macA, tapMAC, layers.EthernetTypeIPv6), ip6(llA, "fe80::1", layers.IPProtocolICMPv6), icmp6(layers.ICMPv6TypeEchoRequest)), false},
		{"ipv6 hop-by-hop", long(ether(macA, tapMAC, layers.EthernetTypeIPv6), ip6(llA, "fe80::1", layers.IPProtocolIPv6HopByHop)), false},
		{"other ethertype", long(ether(macA, tapMAC, layers.EthernetType(0x88b5))), false},
	} {
		if got := HeadDecides(tc.frame); got != tc.want {
			t.Errorf("%s: HeadDecides %v, want %v", tc.name, got, tc.want)
		}
	}
}
