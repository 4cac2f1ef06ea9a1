package secure

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The seed corpus is the rule table: every rule's passing and dropped
// frames, so `go test` runs both fuzz targets over them as ordinary tests.
func addSeeds(f *testing.F, withV6 bool) {
	for _, tc := range ruleCases() {
		if withV6 {
			f.Add(tc.frame, tc.ipv6)
		} else {
			f.Add(tc.frame)
		}
	}
}

var (
	cidr    = netip.MustParsePrefix("198.18.0.0/16")
	prefix6 = netip.MustParsePrefix("2001:db8::/64")
)

// FuzzFromClient: whatever a client sends, the checker does not panic, and
// nothing it passes carries an address the client may not use: no IPv4
// source outside the CIDR but a DHCP client's 0.0.0.0, no ARP for another's
// MAC or address, no tagged frame, no IPv6 without --ipv6; nor a message
// only the host side may send (DHCP server, router advertisement,
// redirect).
func FuzzFromClient(f *testing.F) {
	addSeeds(f, true)
	unsecure := newTestPolicy(f, Config{}).NewChecker()
	f.Fuzz(func(t *testing.T, frame []byte, v6 bool) {
		p := newTestPolicy(t, testConfig(v6))
		c := p.NewChecker()
		// B holds ipB: A must never get a frame from it through.
		if r := c.FromClient(tcpFrame(macB, ipB, tapIP), portB, 0); r != Pass {
			t.Fatalf("B's setup frame: %v", r)
		}
		r := c.FromClient(frame, portA, 1)
		tap := c.ToTap()
		_ = c.Describe()
		if r >= NumReasons || tap >= NumReasons {
			t.Fatalf("verdicts out of range: %d %d", r, tap)
		}
		if r != Pass && tap != r {
			t.Fatalf("ToTap %v after FromClient %v", tap, r)
		}
		if r == Pass {
			if why := hostOnlyMessage(frame); why != "" {
				t.Fatalf("passed %s from a client: % x", why, frame)
			}
			if why := passedViolation(frame, v6); why != "" {
				t.Fatalf("passed a frame that %s: % x", why, frame)
			}
		}
		if unsecure.FromClient(frame, portA, 1) != Pass || unsecure.ToTap() != Pass {
			t.Fatal("-U dropped a frame")
		}
	})
}

// passedViolation reads a frame the policy passed, independently of the
// checker, and says which promise it breaks, if any.
func passedViolation(f []byte, v6 bool) string {
	if len(f) < 14 {
		return "is a runt"
	}
	src := [6]byte(f[6:12])
	if src[0]&1 != 0 || src == [6]byte{} || src == tapMAC {
		return "has a forbidden source MAC"
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x8100, 0x88a8, 0x9100, 0x9200:
		return "is VLAN-tagged"
	case 0x0800:
		h := f[14:]
		if len(h) < 20 {
			return "has a truncated IPv4 header"
		}
		a := netip.AddrFrom4([4]byte(h[12:16]))
		if a == netip.MustParseAddr(ipB) {
			return "uses B's address"
		}
		if a.IsUnspecified() {
			hl := int(h[0]&0x0f) * 4
			frag := binary.BigEndian.Uint16(h[6:8]) & 0x3fff
			if h[9] != 17 || frag != 0 || len(h) < hl+4 ||
				binary.BigEndian.Uint16(h[hl:]) != 68 || binary.BigEndian.Uint16(h[hl+2:]) != 67 {
				return "comes from 0.0.0.0 and is not DHCP"
			}
			return ""
		}
		if !cidr.Contains(a) || a == netip.MustParseAddr(tapIP) {
			return "has an IPv4 source outside the CIDR or the TAP's"
		}
	case 0x0806:
		a := f[14:]
		if len(a) < 28 {
			return "has a truncated ARP packet"
		}
		if !bytes.Equal(a[8:14], f[6:12]) {
			return "is ARP for another MAC"
		}
		s := netip.AddrFrom4([4]byte(a[14:18]))
		if s.IsUnspecified() && binary.BigEndian.Uint16(a[6:8]) == 1 {
			return ""
		}
		if !cidr.Contains(s) || s == netip.MustParseAddr(tapIP) || s == netip.MustParseAddr(ipB) {
			return "is ARP from a forbidden sender IP"
		}
	case 0x86dd:
		if !v6 {
			return "is IPv6 without --ipv6"
		}
		if len(f) < 54 {
			return "has a truncated IPv6 header"
		}
		s := netip.AddrFrom16([16]byte(f[22:38]))
		if !s.IsUnspecified() && !s.IsLinkLocalUnicast() && !prefix6.Contains(s) {
			return "has an IPv6 source outside the prefix"
		}
		if s == netip.MustParseAddr(tap6) || s.String() == tapLL6 {
			return "uses the TAP's IPv6 address"
		}
	}
	return ""
}

// hostOnlyMessage reads the transport header of a passed frame (whole
// datagram or first fragment), independently of the checker, and names the
// host-only message it carries, if any. It follows IPv6's hop-by-hop,
// routing, destination-options and fragment headers, the chain a receiver
// walks to reach the upper layer.
func hostOnlyMessage(f []byte) string {
	if len(f) < 14 {
		return ""
	}
	var proto byte
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		h := f[14:]
		if len(h) < 20 || binary.BigEndian.Uint16(h[6:8])&0x1fff != 0 {
			return ""
		}
		proto, l4 = h[9], h[min(int(h[0]&0x0f)*4, len(h)):]
	case 0x86dd:
		if len(f) < 54 {
			return ""
		}
		proto, l4 = f[20], f[54:]
		for proto == 0 || proto == 43 || proto == 60 || proto == 44 {
			if len(l4) < 8 {
				return ""
			}
			size := (int(l4[1]) + 1) * 8
			if proto == 44 {
				if binary.BigEndian.Uint16(l4[2:4])&0xfff8 != 0 {
					return "" // a later fragment: no upper-layer header
				}
				size = 8
			}
			if len(l4) < size {
				return ""
			}
			proto, l4 = l4[0], l4[size:]
		}
	default:
		return ""
	}
	v6 := f[12] == 0x86
	switch {
	case proto == 17 && len(l4) >= 4:
		sport, dport := binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		if !v6 && (sport == 67 || dport == 68) || v6 && (sport == 547 || dport == 546) {
			return fmt.Sprintf("a DHCP server message (UDP %d to %d)", sport, dport)
		}
	case !v6 && proto == 1 && len(l4) >= 1 && (l4[0] == 5 || l4[0] == 9):
		return fmt.Sprintf("ICMP type %d", l4[0])
	case v6 && proto == 58 && len(l4) >= 1 && (l4[0] == 134 || l4[0] == 137):
		return fmt.Sprintf("ICMPv6 type %d", l4[0])
	}
	return ""
}

// FuzzDecode cross-checks the zero-allocation decoding against gopacket's
// full packet decoder, which shares none of the hand checks: whatever the
// checker passes as IPv4 or ARP, gopacket decodes to the same addresses and
// a sane header. A verdict is also deterministic: a second checker on the
// same policy judges the frame the same way (a passed frame's addresses are
// then bound to the same client).
func FuzzDecode(f *testing.F) {
	addSeeds(f, false)
	f.Fuzz(func(t *testing.T, frame []byte) {
		p := newTestPolicy(t, testConfig(true))
		c1, c2 := p.NewChecker(), p.NewChecker()
		r1 := c1.FromClient(frame, portA, 1)
		t1 := c1.ToTap()
		r2 := c2.FromClient(frame, portA, 2)
		t2 := c2.ToTap()
		if r1 != r2 || t1 != t2 {
			t.Fatalf("verdicts differ: %v/%v then %v/%v", r1, t1, r2, t2)
		}
		_ = c1.Describe()
		if r1 != Pass || len(frame) < 14 {
			return
		}
		pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.NoCopy)
		switch binary.BigEndian.Uint16(frame[12:14]) {
		case 0x0800:
			l, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !ok {
				t.Fatalf("passed IPv4 that gopacket cannot decode: %v", pkt.ErrorLayer())
			}
			if l.Version != 4 || l.IHL < 5 || int(l.Length) < int(l.IHL)*4 || int(l.Length) > len(frame)-14 {
				t.Fatalf("passed a bad IPv4 header: version %d ihl %d length %d frame %d", l.Version, l.IHL, l.Length, len(frame))
			}
			if !bytes.Equal(l.SrcIP, frame[26:30]) {
				t.Fatalf("gopacket's source %v differs from the frame's", l.SrcIP)
			}
		case 0x0806:
			l, ok := pkt.Layer(layers.LayerTypeARP).(*layers.ARP)
			if !ok {
				t.Fatalf("passed ARP that gopacket cannot decode: %v", pkt.ErrorLayer())
			}
			if !bytes.Equal(l.SourceHwAddress, frame[6:12]) || l.HwAddressSize != 6 || l.ProtAddressSize != 4 {
				t.Fatalf("passed ARP with sender %v sizes %d/%d", l.SourceHwAddress, l.HwAddressSize, l.ProtAddressSize)
			}
		}
	})
}
