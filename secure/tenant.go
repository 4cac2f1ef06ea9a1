package secure

import "encoding/binary"

// The rules that make secure mode a tenant switch (DHCP snooping and RA
// guard): the messages that tell a host where its address, gateway and
// resolver are belong to the host side. The TAP's frames are never checked,
// so a DHCP server or router on the host is unaffected; a client sending one
// is refused toward every port, since its victims are the other clients.
//
// Only the transport header says what a datagram is, and only a datagram's
// first fragment (offset 0) carries it. The callers check first fragments
// and whole datagrams alike, after checkTransport has required the whole
// UDP or ICMP header, and an IPv6 first fragment's whole extension-header
// chain, to be in that fragment: the ports or type cannot be pushed into a
// later fragment. Later fragments pass as they do today, from the client's
// own address: without a first fragment that passed they reassemble into
// nothing. A later fragment starts 8 bytes into the fragmentable part at
// the earliest, past a UDP or ICMP header that starts it, so even on a
// receiver that honours overlapping fragments it cannot rewrite the header.
// checkIPv6 refuses the one way to move the header further in, extension
// headers after the Fragment header, in front of UDP and ICMPv6.
//
// Encapsulations (AH, ESP, GRE, IP-in-IP) are not opened: a receiver takes
// them apart only under a security association or tunnel it configured with
// the sender, so they cannot reach a host that did not agree to them.

const (
	portDHCPServer   = 67
	portDHCPClient   = 68
	portDHCPv6Client = 546
	portDHCPv6Server = 547

	icmpRedirect     = 5
	icmpRouterAdvert = 9

	icmp6RouterAdvert = 134
	icmp6Redirect     = 137
)

// hostOnly4 refuses an IPv4 datagram, unfragmented or a first fragment, that
// only the host side may send. l4 is its transport header onward, complete
// (checkTransport passed). A client's own DHCP traffic is 68 to 67 and
// passes; anything from port 67 (a server, or a relay to a server) or to
// port 68 (a client) is a server's or a relay's.
func hostOnly4(proto uint8, l4 []byte) Reason {
	switch proto {
	case protoUDP:
		if binary.BigEndian.Uint16(l4[0:2]) == portDHCPServer || binary.BigEndian.Uint16(l4[2:4]) == portDHCPClient {
			return DHCPServer
		}
	case protoICMP:
		switch l4[0] {
		case icmpRedirect:
			return ICMPRedirect
		case icmpRouterAdvert:
			return ICMPRouterAdvert
		}
	}
	return Pass
}

// hostOnly6 is hostOnly4 for IPv6: DHCPv6 from port 547 (a server or relay)
// or to port 546 (a client), router advertisements and redirects. next is
// the header after the extension headers, l4 its first bytes, complete.
func hostOnly6(next uint8, l4 []byte) Reason {
	switch next {
	case protoUDP:
		if binary.BigEndian.Uint16(l4[0:2]) == portDHCPv6Server || binary.BigEndian.Uint16(l4[2:4]) == portDHCPv6Client {
			return DHCPv6Server
		}
	case protoICMPv6:
		switch l4[0] {
		case icmp6RouterAdvert:
			return NDRouterAdvert
		case icmp6Redirect:
			return NDRedirect
		}
	}
	return Pass
}
