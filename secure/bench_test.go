package secure

import (
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// benchVerdict checks frame once per iteration: FromClient, and ToTap when
// toTap. ns/op is ns per frame.
func benchVerdict(b *testing.B, cfg Config, frame []byte, want Reason, toTap bool) {
	p := newTestPolicy(b, cfg)
	if p.Leases() {
		// With --ip-source dhcp, A holds a lease of ipA.
		m, _ := ParseDHCPReply(ackFrame(macA, ipA, 0xffffffff))
		if !p.SnoopReply(&m, portA, 0) {
			b.Fatal("no lease")
		}
	}
	c := p.NewChecker()
	var now int64
	if r := c.FromClient(frame, portA, now); r != want {
		b.Fatalf("verdict %v, want %v", r, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now++
		if c.FromClient(frame, portA, now) != want {
			b.Fatal("verdict changed")
		}
		if toTap && c.ToTap() != want {
			b.Fatal("ToTap verdict changed")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/frame")
}

func BenchmarkVerdictTCP(b *testing.B) {
	benchVerdict(b, testConfig(false), tcpFrame(macA, ipA, tapIP), Pass, true)
}

func BenchmarkVerdictTCP1500(b *testing.B) {
	f := tcpFrame(macA, ipA, tapIP)
	f = append(f, make([]byte, 1514-len(f))...)
	f[16], f[17] = 1500>>8, 1500&0xff // IPv4 total length
	benchVerdict(b, testConfig(false), fixIPv4Checksum(f), Pass, true)
}

func BenchmarkVerdictARP(b *testing.B) {
	benchVerdict(b, testConfig(false), arpFrame(macA, layers.ARPRequest, macA, ipA, tapIP), Pass, true)
}

func BenchmarkVerdictSpoofed(b *testing.B) {
	benchVerdict(b, testConfig(false), tcpFrame(macA, "10.0.0.1", tapIP), IPv4SrcOutside, false)
}

func BenchmarkVerdictIPv6NA(b *testing.B) {
	benchVerdict(b, testConfig(true), naFrame(macA, llA, llA, llOpt(layers.ICMPv6OptTargetAddress, macA)), Pass, true)
}

func BenchmarkVerdictUnsecure(b *testing.B) {
	benchVerdict(b, Config{}, tcpFrame(macA, "10.0.0.1", tapIP), Pass, true)
}

// BenchmarkVerdictOtherUsersRange: a client claiming, frame after frame,
// an address in another user's --user-net range, among 16 ranges: the
// binding lookup misses and the range lookup runs every time.
func BenchmarkVerdictOtherUsersRange(b *testing.B) {
	var nets []UserNet
	for i := 0; i < 16; i++ {
		nets = append(nets, userNet(int32(1000+i), "198.18.7."+itoa(16*i)+"/28"))
	}
	p := newTestPolicy(b, tenantConfig(63, nets...))
	c := p.NewChecker()
	p.SetOwner(portA, 1, uidA)
	m := clientMAC(portA)
	frame := tcpFrame(m, "198.18.7.100", "198.18.7.1")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if c.FromClient(frame, portA, int64(i)) != IPInOtherUserNet {
			b.Fatal("claim in another user's range passed")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/frame")
}

// BenchmarkVerdictTCPLeased is BenchmarkVerdictTCP with --ip-source dhcp:
// the source is checked against the lease table instead of the bindings.
func BenchmarkVerdictTCPLeased(b *testing.B) {
	cfg := testConfig(false)
	cfg.IPSource = IPSourceDHCP
	benchVerdict(b, cfg, tcpFrame(macA, ipA, tapIP), Pass, true)
}

// BenchmarkParseDHCPReplyTCP is the cost --ip-source dhcp adds to every
// frame from the TAP that is not a DHCP reply.
func BenchmarkParseDHCPReplyTCP(b *testing.B) {
	frame := tcpFrame(tapMAC, tapIP, ipA)
	for b.Loop() {
		if _, ok := ParseDHCPReply(frame); ok {
			b.Fatal("parsed")
		}
	}
}

// BenchmarkVerdictUDP6 is BenchmarkVerdictTCP for IPv6 (--ipv6): a UDP
// datagram from the client's global address.
func BenchmarkVerdictUDP6(b *testing.B) {
	benchVerdict(b, testConfig(true), udp6Frame(macA, ip6A, tap6), Pass, true)
}
