package secure

import "encoding/binary"

// DHCP message types (option 53, RFC 2132 9.6) the lease snooping reads.
const (
	DHCPAck     = 5
	DHCPNak     = 6
	dhcpRelease = 7
)

// BOOTP layout (RFC 2131 2): the offsets of the fields the switch reads.
const (
	bootpYiaddr  = 16
	bootpCiaddr  = 12
	bootpChaddr  = 28
	bootpCookie  = 236
	bootpOptions = 240
	dhcpCookie   = 0x63825363

	dhcpOptPad         = 0
	dhcpOptLeaseTime   = 51
	dhcpOptMessageType = 53
	dhcpOptClientID    = 61
	dhcpOptEnd         = 255
)

// DHCPReply is what a DHCPACK or DHCPNAK from the host's server says about
// a lease: the client it is for (chaddr), the address (yiaddr) and, for an
// ACK, the lease time.
type DHCPReply struct {
	Type      uint8   // DHCPAck or DHCPNak
	ClientMAC [6]byte // chaddr
	Addr      uint32  // yiaddr; 0 in a NAK, and in the ACK to a DHCPINFORM
	// LeaseSecs is option 51; HasLeaseTime says whether the reply had it.
	// 0xffffffff is an infinite lease.
	LeaseSecs    uint32
	HasLeaseTime bool
}

// ParseDHCPReply reads a DHCPACK or DHCPNAK out of an Ethernet frame the
// TAP sends: untagged IPv4, a whole (unfragmented) datagram with a valid
// header, UDP from port 67 to port 68, a BOOTREPLY for an Ethernet client
// with the magic cookie and well-formed options. Anything else, malformed
// or not, is not a reply (ok false): no lease comes of it. It reads the
// frame in place and allocates nothing; it is called for every frame from
// the TAP with --ip-source dhcp, so the common frames fail its first tests.
//
// Options carried in the sname and file fields (option 52, overload) are
// not read: a message type there is not seen, so such a reply grants no
// lease. Servers put option 53 in the options field.
func ParseDHCPReply(frame []byte) (m DHCPReply, ok bool) {
	if len(frame) < 14+20+8 || binary.BigEndian.Uint16(frame[12:14]) != etherTypeIPv4 {
		return m, false
	}
	h := frame[14:]
	hlen := int(h[0]&0x0f) * 4
	if h[0]>>4 != 4 || h[9] != protoUDP || hlen < 20 || len(h) < hlen+8 {
		return m, false
	}
	l4 := h[hlen:]
	if binary.BigEndian.Uint16(l4[0:2]) != portDHCPServer || binary.BigEndian.Uint16(l4[2:4]) != portDHCPClient {
		return m, false
	}
	// A DHCP reply from here on: the rare frame, checked in full.
	total := int(binary.BigEndian.Uint16(h[2:4]))
	if total < hlen+8 || total > len(h) || binary.BigEndian.Uint16(h[6:8])&0x3fff != 0 || !ipv4ChecksumOK(h[:hlen]) {
		return m, false
	}
	l4 = h[hlen:total]
	ulen := int(binary.BigEndian.Uint16(l4[4:6]))
	if ulen < 8 || ulen > len(l4) {
		return m, false
	}
	b := l4[8:ulen]
	if len(b) < bootpOptions || b[0] != 2 || b[1] != 1 || b[2] != 6 ||
		binary.BigEndian.Uint32(b[bootpCookie:]) != dhcpCookie {
		return m, false
	}
	for o := b[bootpOptions:]; ; {
		if len(o) == 0 {
			return m, false // no end option
		}
		code, v, rest, good := dhcpOption(o)
		switch {
		case !good:
			return m, false
		case code == dhcpOptEnd:
			if m.Type != DHCPAck && m.Type != DHCPNak {
				return m, false
			}
			m.ClientMAC = [6]byte(b[bootpChaddr : bootpChaddr+6])
			m.Addr = binary.BigEndian.Uint32(b[bootpYiaddr:])
			return m, true
		case code == dhcpOptMessageType:
			// A second, different type would make the reply mean two
			// things: trust neither.
			if len(v) != 1 || m.Type != 0 && m.Type != v[0] || v[0] == 0 {
				return m, false
			}
			m.Type = v[0]
		case code == dhcpOptLeaseTime:
			if len(v) != 4 {
				return m, false
			}
			t := binary.BigEndian.Uint32(v)
			if m.HasLeaseTime && m.LeaseSecs != t {
				return m, false
			}
			m.LeaseSecs, m.HasLeaseTime = t, true
		}
		o = rest
	}
}

// dhcpOption splits the first option off o, which is not empty: its code,
// its value and what follows. The pad option is one byte; the end option
// ends the list (rest nil). good is false when the option runs past o.
func dhcpOption(o []byte) (code byte, v, rest []byte, good bool) {
	switch o[0] {
	case dhcpOptPad:
		return dhcpOptPad, nil, o[1:], true
	case dhcpOptEnd:
		return dhcpOptEnd, nil, nil, true
	}
	if len(o) < 2 || len(o) < 2+int(o[1]) {
		return o[0], nil, nil, false
	}
	return o[0], o[2 : 2+int(o[1])], o[2+int(o[1]):], true
}
