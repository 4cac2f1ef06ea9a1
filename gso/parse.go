package gso

import "encoding/binary"

const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	etherTypeDot1Q = 0x8100
	etherTypeQinQ  = 0x88a8

	ethHeaderLen  = 14
	vlanTagLen    = 4
	maxVLANTags   = 2
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	tcpHeaderLen  = 20
	udpHeaderLen  = 8

	protoTCP = 6
	protoUDP = 17

	// Offsets of the checksum field in the L4 header: csum_offset's only
	// honest values.
	tcpCsumOffset = 16
	udpCsumOffset = 6

	// IPv6 extension headers a superframe may carry before its TCP/UDP
	// header, as the kernel's ipv6_gso_segment accepts them. Fragment (44)
	// is not among them: a fragment is never a superframe.
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6DestOpts = 60
	// maxIPv6ExtHeaders bounds the walk; a real packet has one or two.
	maxIPv6ExtHeaders = 8

	// minEthernetFrame is the shortest frame on the wire, FCS excluded: a
	// shorter packet is padded, so bytes past the IP packet are allowed
	// up to here.
	minEthernetFrame = 60
)

// MaxFrameLen is the longest frame anything here accepts: the largest IP
// packet a length field describes (an IPv6 header and 65535 bytes of
// payload; IPv4 is 20 bytes shorter) after an Ethernet header with two VLAN
// tags. Superframe buffers of this size hold any superframe.
const MaxFrameLen = ethHeaderLen + maxVLANTags*vlanTagLen + ipv6HeaderLen + 65535

// layout is where the headers of an IP frame are, found by parsing the frame
// itself. Offsets count from the first byte of the frame.
type layout struct {
	l3    int // IPv4 or IPv6 header
	l4    int // TCP or UDP header (or the first byte after IP's headers)
	data  int // payload after the TCP/UDP header; l4 for other protocols
	end   int // end of the IP packet as its length field says; padding follows
	ipv6  bool
	proto uint8 // TCP, UDP or another protocol (then data == l4)
}

// isTCPOrUDP reports whether the L4 header was found and parsed.
func (l *layout) isTCPOrUDP() bool { return l.proto == protoTCP || l.proto == protoUDP }

// csumOffset is the offset of the checksum field in the L4 header.
func (l *layout) csumOffset() int {
	if l.proto == protoTCP {
		return tcpCsumOffset
	}
	return udpCsumOffset
}

// parse finds the headers of an Ethernet frame carrying IPv4 or IPv6. It
// reads only the frame: every length comes from a header and is checked
// against the frame before it is used. The TCP or UDP header is parsed when
// the IP packet carries one; any other protocol is returned with data == l4
// for the caller to refuse or not. A frame that is not IP is ErrGSOTypeMismatch
// (a header that claims IP for it lies about its type).
func parse(frame []byte) (layout, *Error) {
	var l layout
	if len(frame) < ethHeaderLen {
		return l, ErrTruncated
	}
	off := ethHeaderLen
	etype := binary.BigEndian.Uint16(frame[12:])
	for tags := 0; etype == etherTypeDot1Q || etype == etherTypeQinQ; tags++ {
		if tags == maxVLANTags {
			return l, ErrGSOTypeMismatch
		}
		if len(frame) < off+vlanTagLen {
			return l, ErrTruncated
		}
		etype = binary.BigEndian.Uint16(frame[off+2:])
		off += vlanTagLen
	}
	l.l3 = off
	var err *Error
	switch etype {
	case etherTypeIPv4:
		err = l.parseIPv4(frame)
	case etherTypeIPv6:
		l.ipv6 = true
		err = l.parseIPv6(frame)
	default:
		return l, ErrGSOTypeMismatch
	}
	if err != nil {
		return l, err
	}
	l.data = l.l4
	switch l.proto {
	case protoTCP:
		if l.end-l.l4 < tcpHeaderLen {
			return l, ErrTruncated
		}
		doff := int(frame[l.l4+12]>>4) * 4
		if doff < tcpHeaderLen {
			return l, ErrIPHeader
		}
		if l.end-l.l4 < doff {
			return l, ErrTruncated
		}
		l.data = l.l4 + doff
	case protoUDP:
		if l.end-l.l4 < udpHeaderLen {
			return l, ErrTruncated
		}
		l.data = l.l4 + udpHeaderLen
	}
	return l, nil
}

func (l *layout) parseIPv4(frame []byte) *Error {
	h := frame[l.l3:]
	if len(h) < ipv4HeaderLen {
		return ErrTruncated
	}
	ihl := int(h[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(h[2:]))
	if h[0]>>4 != 4 || ihl < ipv4HeaderLen || total < ihl {
		return ErrIPHeader
	}
	if total > len(h) {
		return ErrTruncated
	}
	// MF set or a fragment offset: one piece of a datagram, never a
	// superframe, and its L4 header (if any) covers more than this frame.
	if binary.BigEndian.Uint16(h[6:])&0x3fff != 0 {
		return ErrFragment
	}
	l.l4 = l.l3 + ihl
	l.end = l.l3 + total
	l.proto = h[9]
	return nil
}

func (l *layout) parseIPv6(frame []byte) *Error {
	h := frame[l.l3:]
	if len(h) < ipv6HeaderLen {
		return ErrTruncated
	}
	if h[0]>>4 != 6 {
		return ErrIPHeader
	}
	// A payload length of 0 with a hop-by-hop jumbo option is BIG TCP,
	// longer than MaxFrameLen anyway: it fails below as truncated.
	l.end = l.l3 + ipv6HeaderLen + int(binary.BigEndian.Uint16(h[4:]))
	if l.end > len(frame) {
		return ErrTruncated
	}
	next := h[6]
	off := l.l3 + ipv6HeaderLen
	for i := 0; next == ipv6HopByHop || next == ipv6Routing || next == ipv6DestOpts; i++ {
		if i == maxIPv6ExtHeaders {
			return ErrIPHeader
		}
		if l.end-off < 8 {
			return ErrTruncated
		}
		n := (int(frame[off+1]) + 1) * 8
		if l.end-off < n {
			return ErrTruncated
		}
		next = frame[off]
		off += n
	}
	if next == 44 { // Fragment
		return ErrFragment
	}
	l.l4 = off
	l.proto = next
	return nil
}

// datagramEnd is where the L4 packet of a frame that is not a superframe
// ends: the IP packet's end for TCP, the UDP length's for UDP. A receiver
// trims a UDP datagram to its UDP length and checksums that much (RFC 768),
// so a checksum completed over more would not verify; a UDP length below 8
// or past the IP packet is refused as a receiver refuses it. (A USO
// superframe's UDP length is ignored instead: see Split.)
func (l *layout) datagramEnd(frame []byte) (int, *Error) {
	if l.proto != protoUDP {
		return l.end, nil
	}
	ulen := int(binary.BigEndian.Uint16(frame[l.l4+4:]))
	if ulen < udpHeaderLen || ulen > l.end-l.l4 {
		return 0, ErrUDPLength
	}
	return l.l4 + ulen, nil
}
