package secure

import "encoding/binary"

// HeadDecides says whether the checks of a frame that begins with head
// and is longer read none of its bytes past head: Checker.Check, Bind,
// ToTap and Describe then judge the frame by head and its length alone,
// and what follows may be copied after the verdict, from where its sender
// can still change it, without changing the verdict (the engine's one
// copy from guest to guest). It is true only for what most traffic is,
// IPv4 and IPv6 with their transport header in head; anything it is not
// sure of is false, and the frame is then checked whole.
//
// The rules that read further, and so make it false: DHCP and DHCPv6
// (a client message's options, a release's addresses), ARP and neighbour
// discovery (their options), IPv6 extension headers (a walk of any
// length), and any ethertype but IPv4 and IPv6.
func HeadDecides(head []byte) bool {
	if len(head) < 14 {
		return false
	}
	switch binary.BigEndian.Uint16(head[12:14]) {
	case etherTypeIPv4:
		h := head[14:]
		if len(h) < 20 {
			return false
		}
		hlen := int(h[0]&0x0f) * 4
		if hlen < 20 || hlen > len(h) {
			return false
		}
		if binary.BigEndian.Uint16(h[6:8])&0x1fff != 0 {
			return true // a later fragment: only its IP header is read
		}
		return transportInHead(h[9], h[hlen:], portDHCPServer, portDHCPClient)
	case etherTypeIPv6:
		h := head[14:]
		if len(h) < 40 {
			return false
		}
		switch next := h[6]; next {
		case protoTCP, protoUDP:
			return transportInHead(next, h[40:], portDHCPv6Server, portDHCPv6Client)
		}
	}
	return false
}

// transportInHead says the transport header of a first fragment or
// whole datagram is all in l4 (what is in head of it), and that it is
// TCP, UDP but DHCP (ports dhcpA and dhcpB either way) or ICMP, whose
// checks read no more.
func transportInHead(proto uint8, l4 []byte, dhcpA, dhcpB uint16) bool {
	switch proto {
	case protoTCP:
		return len(l4) >= 20 && int(l4[12]>>4)*4 <= len(l4)
	case protoUDP:
		if len(l4) < 8 {
			return false
		}
		for _, p := range [2]uint16{binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])} {
			if p == dhcpA || p == dhcpB {
				return false
			}
		}
		return true
	case protoICMP:
		return len(l4) >= 8
	}
	return false
}
