package secure

import "strconv"

// Reason is the verdict on one frame: Pass, or the rule that dropped it.
// The engine counts drops per port in [NumReasons]uint64 arrays indexed by
// Reason, so the values are dense and small.
type Reason uint8

const (
	// Pass: the frame obeys every rule.
	Pass Reason = iota

	// Truncated: the frame ends before a header it announces does (Ethernet,
	// ARP, IPv4, IPv6, an IPv6 extension header, the UDP/TCP/ICMP header of
	// an unfragmented or first-fragment datagram), or before the length an
	// IPv4 total length, IPv6 payload length or UDP length field declares.
	Truncated

	// SrcMACMulticast: the Ethernet source has the group bit set
	// (multicast, including broadcast); no station sends from a group MAC.
	SrcMACMulticast
	// SrcMACZero: the Ethernet source is 00:00:00:00:00:00.
	SrcMACZero
	// SrcMACTap: the Ethernet source is the TAP's own MAC.
	SrcMACTap

	// VLANTagged: an 802.1Q, 802.1ad or QinQ tagged frame. The CIDR and
	// the bindings describe the untagged segment; a tag would open a
	// segment the policy knows nothing about, so tagged frames are refused
	// instead of being a way around the rules.
	VLANTagged

	// ARPMalformed: an ARP packet that is not Ethernet/IPv4 ARP (hardware
	// type 1, protocol 0x0800, address sizes 6 and 4) or whose operation is
	// neither request nor reply.
	ARPMalformed
	// ARPSenderMismatch: the ARP sender hardware address differs from the
	// Ethernet source.
	ARPSenderMismatch
	// ARPSenderOutside: the ARP sender IP is not a host address of the CIDR,
	// or is 0.0.0.0 in anything but a request (an ARP probe).
	ARPSenderOutside

	// IPv4Malformed: version not 4, header length below 5 words, total
	// length shorter than the header, or malformed IPv4 options.
	IPv4Malformed
	// IPv4BadChecksum: the IPv4 header checksum is wrong. Guests compute it
	// in software even with offloads, so this is a corrupt or forged header.
	IPv4BadChecksum
	// IPv4SrcOutside: the IPv4 source is not a host address of the CIDR
	// (outside it, or its network or broadcast address).
	IPv4SrcOutside
	// IPv4ZeroSrcNotDHCP: source 0.0.0.0 on anything but an unfragmented
	// UDP datagram from port 68 to port 67 (a DHCP client without a lease).
	IPv4ZeroSrcNotDHCP

	// TransportMalformed: a UDP length field below 8, or a TCP data offset
	// below 5 words.
	TransportMalformed

	// IPv6Disabled: an IPv6 frame while --ipv6 is not given.
	IPv6Disabled
	// IPv6Malformed: version not 6, a payload length of 0 (jumbograms cannot
	// exist on Ethernet), a chain of more extension headers than any
	// real stack sends, or a first fragment with extension headers between
	// its Fragment header and a UDP or ICMPv6 header (where an overlapping
	// later fragment could rewrite the header the rules judged).
	IPv6Malformed
	// IPv6SrcOutside: the IPv6 source is neither link-local nor in the
	// --ipv6 prefix.
	IPv6SrcOutside
	// IPv6UnspecifiedSrc: source :: on anything but the ICMPv6 messages a
	// host sends before it has an address (router and neighbour
	// solicitation, MLD reports).
	IPv6UnspecifiedSrc

	// NDMalformed: a neighbour-discovery message (RS, RA, NS, NA, redirect)
	// that is fragmented (receivers must ignore those, RFC 6980), shorter
	// than its fixed part, or has an option of length 0 or past the end.
	NDMalformed
	// NDSourceMismatch: the source link-layer address option of a router or
	// neighbour solicitation or router advertisement differs from the
	// Ethernet source.
	NDSourceMismatch
	// NDTargetMismatch: the target link-layer address option of a neighbour
	// advertisement differs from the Ethernet source: the ARP-reply spoof of
	// IPv6.
	NDTargetMismatch
	// NDTargetOutside: a neighbour advertisement for a target address that
	// is neither link-local nor in the --ipv6 prefix.
	NDTargetOutside

	// TapAddrClaimed: a client used one of the TAP's own addresses (as IP
	// source, ARP sender or advertised neighbour target).
	TapAddrClaimed
	// IPBindingConflict: the address is bound to another client (another MAC,
	// or the same MAC on another port).
	IPBindingConflict
	// BindingTableFull: the address is not yet bound and the binding table
	// already holds Config.MaxBindings addresses.
	BindingTableFull
	// PortBindingLimit: the address is not yet bound and the client's port
	// already holds Config.PortBindings addresses, so that no one client
	// can fill the table and lock the others out.
	PortBindingLimit
	// UserBindingLimit: the address is not yet bound, is in none of the
	// user's own --user-net ranges, and the clients of the client's user
	// (uid) already hold Config.UserBindings such addresses together
	// (--user-ips), so that no user can take the network from the others.
	UserBindingLimit
	// IPInOtherUserNet: the address is not yet bound and is in a
	// --user-net range of another user than the client's.
	IPInOtherUserNet
	// IPOutsideUserNet: the client's user has --user-net ranges and the
	// IPv4 address, not yet bound, is in none of them.
	IPOutsideUserNet
	// DHCPMalformed: a DHCP client message (UDP 68 to 67) that is not a
	// BOOTP request for Ethernet (op 1, htype 1, hlen 6, magic cookie).
	DHCPMalformed
	// DHCPClientMismatch: a DHCP client message whose client hardware
	// address (chaddr), or Ethernet client identifier (option 61, type 1),
	// is not the frame's source MAC: one client speaking for another, for
	// example releasing its lease or draining the pool.
	DHCPClientMismatch
	// IPNotLeased: with --ip-source dhcp, an IPv4 address (source or ARP
	// sender) or global IPv6 address (source or advertised neighbour
	// target) the host's DHCP or DHCPv6 server has not leased to the
	// frame's MAC on its port, or whose lease has ended.
	IPNotLeased

	// DHCPServer: a DHCPv4 server or relay message (UDP from port 67, or to
	// port 68) from a client, unfragmented or a first fragment: only the
	// host side may hand out addresses, gateways and resolvers.
	DHCPServer
	// DHCPv6Server: a DHCPv6 server or relay message (UDP from port 547, or
	// to port 546) from a client.
	DHCPv6Server
	// NDRouterAdvert: an ICMPv6 router advertisement from a client: only the
	// host side may announce routers and prefixes.
	NDRouterAdvert
	// NDRedirect: an ICMPv6 redirect from a client.
	NDRedirect
	// ICMPRouterAdvert: an ICMP router advertisement (type 9) from a client.
	ICMPRouterAdvert
	// ICMPRedirect: an ICMP redirect (type 5) from a client.
	ICMPRedirect

	// TapEtherDenied: toward the TAP, an ethertype other than ARP, IPv4,
	// (with --ipv6) IPv6, and a RARP announcing the sender's own MAC (a
	// migrated VM's).
	TapEtherDenied
	// TapProtoDenied: toward the TAP, an IP protocol other than ICMP, UDP and
	// TCP (ICMPv6, UDP and TCP for IPv6).
	TapProtoDenied

	// NumReasons is the number of Reason values, Pass included.
	NumReasons
)

var reasonNames = [NumReasons]string{
	Pass:               "pass",
	Truncated:          "truncated",
	SrcMACMulticast:    "src-mac-multicast",
	SrcMACZero:         "src-mac-zero",
	SrcMACTap:          "src-mac-tap",
	VLANTagged:         "vlan-tagged",
	ARPMalformed:       "arp-malformed",
	ARPSenderMismatch:  "arp-sender-mismatch",
	ARPSenderOutside:   "arp-sender-outside",
	IPv4Malformed:      "ipv4-malformed",
	IPv4BadChecksum:    "ipv4-bad-checksum",
	IPv4SrcOutside:     "ipv4-src-outside",
	IPv4ZeroSrcNotDHCP: "ipv4-zero-src-not-dhcp",
	TransportMalformed: "transport-malformed",
	IPv6Disabled:       "ipv6-disabled",
	IPv6Malformed:      "ipv6-malformed",
	IPv6SrcOutside:     "ipv6-src-outside",
	IPv6UnspecifiedSrc: "ipv6-unspecified-src",
	NDMalformed:        "nd-malformed",
	NDSourceMismatch:   "nd-source-mismatch",
	NDTargetMismatch:   "nd-target-mismatch",
	NDTargetOutside:    "nd-target-outside",
	TapAddrClaimed:     "tap-addr-claimed",
	IPBindingConflict:  "ip-binding-conflict",
	BindingTableFull:   "binding-table-full",
	PortBindingLimit:   "port-binding-limit",
	UserBindingLimit:   "user-binding-limit",
	IPInOtherUserNet:   "ip-other-user-net",
	IPOutsideUserNet:   "ip-outside-user-net",
	DHCPMalformed:      "dhcp-malformed",
	DHCPClientMismatch: "dhcp-client-mismatch",
	IPNotLeased:        "ip-not-leased",
	DHCPServer:         "dhcp-server",
	DHCPv6Server:       "dhcpv6-server",
	NDRouterAdvert:     "nd-router-advert",
	NDRedirect:         "nd-redirect",
	ICMPRouterAdvert:   "icmp-router-advert",
	ICMPRedirect:       "icmp-redirect",
	TapEtherDenied:     "tap-ethertype-denied",
	TapProtoDenied:     "tap-proto-denied",
}

// String returns the reason's short kebab-case name, used as a counter label
// and in drop log lines.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "reason-" + strconv.Itoa(int(r))
}
