package secure

import (
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// kernelRule is one drop rule of the kernel filter, shown by two frames
// that differ only where the rule looks: drop, which the rule drops, and
// keep, which every rule passes.
type kernelRule struct {
	rule       string
	v6         bool // under the policy with --ipv6
	drop, keep []byte
}

// kernelRules has a case for every jump to "drop" in the generated
// program (filter.go, filter_ip4.go, filter_ip6.go), in program order.
func kernelRules() []kernelRule {
	tcp := tcpFrame(macA, ipA, tapIP)
	// v4 rewrites IPv4 header bytes (offsets within the header) and
	// fixes the header checksum after.
	v4 := func(f []byte, off int, v ...byte) []byte { return fixIPv4Checksum(setIPv4(f, off, v...)) }
	// at rewrites frame bytes at off.
	at := func(f []byte, off int, v ...byte) []byte {
		return mutate(f, func(b []byte) []byte { copy(b[off:], v); return b })
	}
	be16 := func(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
	proto := func(p layers.IPProtocol, l4 []byte) []byte { return ipProtoFrame(macA, ipA, tapIP, p, l4) }
	arp := func(op uint16, sender string) []byte { return arpFrame(macA, op, macA, sender, tapIP) }
	arpReq := arp(1, ipA)
	udp := udpFrame(macA, ipA, ipB, 5000, 53)
	icmp := icmpFrame(macA, ipA, tapIP)
	const l4 = 14 + 20 // the transport header of a frame with a 20-byte IPv4 header
	noOpts := ipProtoFrame(macA, ipA, tapIP, 253, nil)
	echo6 := echo6Frame(macA, ip6A, tap6)
	udp6 := udp6Frame(macA, ip6A, tap6)
	ns6 := nsFrame(macA, llA, ip6A)
	return []kernelRule{
		{"source MAC multicast", false, tcpFrame(mac("01:00:5e:00:00:01"), ipA, tapIP), tcp},
		{"source MAC zero", false, tcpFrame(mac("00:00:00:00:00:00"), ipA, tapIP), tcpFrame(mac("00:00:00:00:00:02"), ipA, tapIP)},
		{"source MAC the TAP's", false, tcpFrame(tapMAC, ipA, tapIP), tcpFrame(mac("02:00:00:00:00:02"), ipA, tapIP)},
		{"IPv6 without --ipv6", false, echo6, nil},
		{"802.1Q tag", false, vlanFrame(0x8100, tcp), vlanFrame(0x88b5, tcp)},
		{"802.1ad tag", false, vlanFrame(0x88a8, tcp), vlanFrame(0x88b5, tcp)},
		{"QinQ 0x9100 tag", false, vlanFrame(0x9100, tcp), vlanFrame(0x88b5, tcp)},
		{"QinQ 0x9200 tag", false, vlanFrame(0x9200, tcp), vlanFrame(0x88b5, tcp)},

		{"ARP shorter than its 28 bytes", false, arpReq[:14+27], arpReq[:14+28]},
		{"ARP not Ethernet/IPv4", false, at(arpReq, 14, 0, 6), arpReq},
		{"ARP address sizes not 6 and 4", false, at(arpReq, 18, 8), arpReq},
		{"ARP operation neither request nor reply", false, arp(3, ipA), arp(2, ipA)},
		{"ARP sender MAC not the source, first half", false, at(arpReq, 22, 0x62), arpReq},
		{"ARP sender MAC not the source, second half", false, at(arpReq, 27, 0x0b), arpReq},
		{"ARP reply from 0.0.0.0 (a probe is a request)", false, arp(2, "0.0.0.0"), arp(1, "0.0.0.0")},
		{"ARP sender the TAP's address", false, arp(1, tapIP), arp(1, ipA)},
		{"ARP sender outside the network", false, arp(1, "198.19.0.10"), arp(1, ipA)},
		{"ARP sender the network address", false, arp(1, "198.18.0.0"), arp(1, "198.18.0.255")},
		{"ARP sender the broadcast address", false, arp(1, "198.18.255.255"), arp(1, "198.18.255.254")},

		{"IPv4 shorter than its header", false, noOpts[:14+19], noOpts},
		{"IPv4 version not 4", false, v4(tcp, 0, 0x55), tcp},
		{"IPv4 header length under 20", false, v4(tcp, 0, 0x44), tcp},
		{"IPv4 total length under the header's", false, v4(noOpts, 2, be16(19)...), v4(noOpts, 2, be16(20)...)},
		{"IPv4 total length past the frame", false, v4(tcp, 2, be16(len(tcp)-14+1)...), v4(tcp, 2, be16(len(tcp)-14)...)},
		{"IPv4 header checksum wrong", false, setIPv4(tcp, 10, ^tcp[24], tcp[25]), tcp},

		{"UDP header not whole", false, proto(layers.IPProtocolUDP, udpBytes(5000, 53, nil)[:7]), proto(layers.IPProtocolUDP, udpBytes(5000, 53, nil))},
		{"UDP from the DHCP server port", false, at(udp, l4, be16(67)...), at(udp, l4, be16(66)...)},
		{"UDP to the DHCP client port", false, at(udp, l4+2, be16(68)...), at(udp, l4+2, be16(69)...)},
		{"UDP length under 8", false, at(udp, l4+4, be16(7)...), udp},
		{"UDP length past the datagram", false, at(udp, l4+4, be16(int(binary.BigEndian.Uint16(udp[16:]))-20+1)...), udp},
		{"ICMP header not whole", false, proto(layers.IPProtocolICMPv4, []byte{8, 0, 0, 0, 0, 0, 0}), proto(layers.IPProtocolICMPv4, []byte{8, 0, 0, 0, 0, 0, 0, 0})},
		{"ICMP redirect", false, at(icmp, l4, 5), icmp},
		{"ICMP router advertisement", false, at(icmp, l4, 9), icmp},
		{"TCP header not whole", false, proto(layers.IPProtocolTCP, make([]byte, 19)), proto(layers.IPProtocolTCP, append([]byte{0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x50}, make([]byte, 7)...))},
		{"TCP data offset under 20", false, at(tcp, l4+12, 0x40), tcp},
		{"TCP data offset past the segment", false, at(tcp, l4+12, 0xf0), tcp},
		{"IPv4 source 0.0.0.0 (not DHCP)", false, tcpFrame(macA, "0.0.0.0", tapIP), udpFrame(macA, "0.0.0.0", "255.255.255.255", 68, 67)},
		{"IPv4 source the TAP's", false, tcpFrame(macA, tapIP, ipB), tcp},
		{"IPv4 source outside the network", false, tcpFrame(macA, "10.0.0.1", tapIP), tcp},
		{"IPv4 source the network address", false, tcpFrame(macA, "198.18.0.0", tapIP), tcpFrame(macA, "198.18.1.0", tapIP)},
		{"IPv4 source the broadcast address", false, tcpFrame(macA, "198.18.255.255", tapIP), tcpFrame(macA, "198.18.254.255", tapIP)},

		{"IPv6 shorter than its header", true, echo6[:14+39], echo6},
		{"IPv6 version not 6", true, at(echo6, 14, 0x40), echo6},
		{"IPv6 payload length 0", true, at(echo6, 18, 0, 0), echo6},
		{"IPv6 payload length past the frame", true, at(echo6, 18, be16(len(echo6)-54+1)...), echo6},
		{"IPv6 from :: not ICMPv6", true, udp6Frame(macA, "::", tap6), nsFrame(macA, "::", ip6A)},
		{"IPv6 from :: neither solicitation nor MLD report", true, echo6Frame(macA, "::", tap6), nsFrame(macA, "::", ip6A)},
		{"IPv6 source the TAP's", true, echo6Frame(macA, tap6, ip6A), echo6},
		{"IPv6 source the TAP's link-local", true, echo6Frame(macA, tapLL6, ip6A), echo6Frame(macA, llA, ip6A)},
		{"IPv6 source outside the prefix, first word", true, echo6Frame(macA, "2001:db9::a", tap6), echo6},
		{"IPv6 source outside the prefix, second word", true, echo6Frame(macA, "2001:db8:0:1::a", tap6), echo6Frame(macA, "2001:db8::ffff:ffff:ffff:ffff", tap6)},
		{"IPv6 UDP header not whole", true, at(udp6, 18, be16(7)...), udp6},
		{"IPv6 UDP from the DHCPv6 server port", true, at(udp6, 54, be16(547)...), at(udp6, 54, be16(548)...)},
		{"IPv6 UDP to the DHCPv6 client port", true, at(udp6, 56, be16(546)...), at(udp6, 56, be16(545)...)},
		{"ICMPv6 router advertisement", true, at(ns6, 54, 134), ns6},
		{"ICMPv6 redirect", true, at(ns6, 54, 137), ns6},
	}
}

// TestKernelFilterDropsEachRule sends, for every drop rule of the kernel
// filter, one frame the rule drops and one that differs only where the
// rule looks, over a socket pair with the loaded filter attached to the
// receiving end, as the switch attaches it. What counts is what the kernel
// does: the first frame never arrives and its socket's drop counter goes
// up by one; the second arrives. The golden test pins the program's text;
// this one holds its meaning, which regenerating the golden file cannot
// hide. (Root or CAP_BPF is needed to load the filter: skipped otherwise.)
func TestKernelFilterDropsEachRule(t *testing.T) {
	type sock struct {
		fds    [2]int
		k      *KernelFilter
		cookie uint64
	}
	socks := map[bool]*sock{}
	for _, v6 := range []bool{false, true} {
		k := loadTestFilter(t, v6)
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		cookie, err := k.Attach(fds[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Forget(cookie) })
		socks[v6] = &sock{fds: fds, k: k, cookie: cookie}
	}
	for _, r := range kernelRules() {
		s := socks[r.v6]
		before, err := s.k.Dropped(s.cookie)
		if err != nil {
			t.Fatal(err)
		}
		if sendThrough(t, s.fds, r.drop) {
			t.Errorf("%s: the kernel passed the frame the rule drops: % x", r.rule, r.drop)
		} else if after, _ := s.k.Dropped(s.cookie); after != before+1 {
			t.Errorf("%s: the frame did not arrive, yet the socket's drop counter went from %d to %d", r.rule, before, after)
		}
		keep := r.keep
		if keep == nil {
			// The rule has no near miss under its own policy: the same
			// frame under the other one passes.
			s, keep = socks[!r.v6], r.drop
		}
		if !sendThrough(t, s.fds, keep) {
			t.Errorf("%s: the kernel dropped the frame next to it, which no rule drops: % x", r.rule, keep)
		}
	}
}
