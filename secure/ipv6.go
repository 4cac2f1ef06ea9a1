package secure

import (
	"bytes"
	"encoding/binary"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// maxExtHeaders bounds the IPv6 extension-header walk. Real stacks send at
// most a few (hop-by-hop, destination options, routing, fragment); a long
// chain only serves to push the transport header out of a filter's view.
const maxExtHeaders = 8

const (
	ext6HopByHop = 0
	ext6Routing  = 43
	ext6Fragment = 44
	ext6DestOpts = 60
)

// Neighbour-discovery option types (RFC 4861 4.6).
const (
	ndOptSourceLL = 1
	ndOptTargetLL = 2
)

func (c *Checker) checkIPv6(frame []byte) Reason {
	h := frame[14:]
	if len(h) < 40 {
		return Truncated
	}
	if h[0]>>4 != 6 {
		return IPv6Malformed
	}
	plen := int(binary.BigEndian.Uint16(h[4:6]))
	if plen == 0 {
		return IPv6Malformed
	}
	if 40+plen > len(h) {
		return Truncated
	}
	pkt := h[40 : 40+plen]

	next, off := h[6], 0
	first, fragmented := true, false
	fragAt := 0 // where the fragmentable part begins, after the Fragment header
walk:
	for n := 0; ; n++ {
		switch next {
		case ext6HopByHop, ext6Routing, ext6DestOpts, ext6Fragment:
		default:
			break walk
		}
		if n == maxExtHeaders {
			return IPv6Malformed
		}
		if len(pkt)-off < 8 {
			return Truncated
		}
		size := 8
		if next == ext6Fragment {
			if !fragmented {
				fragAt = off + 8
			}
			fragmented = true
			if binary.BigEndian.Uint16(pkt[off+2:off+4])&0xfff8 != 0 {
				first = false
			}
		} else {
			size = (int(pkt[off+1]) + 1) * 8
			if len(pkt)-off < size {
				return Truncated
			}
		}
		next = pkt[off]
		off += size
		if !first {
			// What follows a non-first fragment's header is data.
			break
		}
	}
	c.proto = next
	l4 := pkt[off:]
	if fragmented && first && off > fragAt && (next == protoUDP || next == protoICMPv6) {
		// Extension headers after the Fragment header move the transport
		// header past byte 8 of the fragmentable part, where a later
		// fragment overlapping the first could rewrite the ports or type
		// the rules judged (hostOnly6) on a receiver that does not discard
		// overlaps as RFC 5722 asks. No real stack sends this.
		return IPv6Malformed
	}

	var icmpType uint8
	isICMP := false
	if first {
		if r := checkTransport(next, l4, !fragmented); r != Pass {
			return r
		}
		if next == protoICMPv6 {
			// Cannot fail: checkTransport saw the 4-byte ICMPv6 header.
			_ = c.icmp6.DecodeFromBytes(l4, gopacket.NilDecodeFeedback)
			icmpType, isICMP = c.icmp6.TypeCode.Type(), true
		}
	}

	src := [16]byte(h[8:24])
	if src == [16]byte{} {
		// Before it has an address a host still solicits routers, runs
		// duplicate-address detection and reports multicast listening.
		switch {
		case isICMP && (icmpType == layers.ICMPv6TypeRouterSolicitation ||
			icmpType == layers.ICMPv6TypeNeighborSolicitation ||
			icmpType == layers.ICMPv6TypeMLDv1MulticastListenerReportMessage ||
			icmpType == layers.ICMPv6TypeMLDv2MulticastListenerReportMessageV2):
		default:
			return IPv6UnspecifiedSrc
		}
	} else if r := c.claim6(&src, IPv6SrcOutside); r != Pass {
		return r
	}

	if isICMP {
		switch icmpType {
		case layers.ICMPv6TypeRouterSolicitation, layers.ICMPv6TypeRouterAdvertisement,
			layers.ICMPv6TypeNeighborSolicitation, layers.ICMPv6TypeNeighborAdvertisement,
			layers.ICMPv6TypeRedirect:
			if fragmented {
				return NDMalformed
			}
			if r := c.checkND(icmpType, l4, frame[6:12]); r != Pass {
				return r
			}
		}
	}
	// Last, so that it only refuses what every other rule passed.
	if first {
		return hostOnly6(next, l4)
	}
	return Pass
}

// checkND checks a neighbour-discovery message (msg starts at the ICMPv6
// header) the way ARP is checked: link-layer addresses it announces for the
// sender must be the Ethernet source, and an advertised target is an
// address claimed like a source.
func (c *Checker) checkND(typ uint8, msg, ethSrc []byte) Reason {
	var fixed int
	var ownLL byte // the option carrying the sender's own link-layer address
	switch typ {
	case layers.ICMPv6TypeRouterSolicitation:
		fixed, ownLL = 8, ndOptSourceLL
	case layers.ICMPv6TypeRouterAdvertisement:
		fixed, ownLL = 16, ndOptSourceLL
	case layers.ICMPv6TypeNeighborSolicitation:
		fixed, ownLL = 24, ndOptSourceLL
	case layers.ICMPv6TypeNeighborAdvertisement:
		fixed, ownLL = 24, ndOptTargetLL
	default: // redirect: its target link-layer option names another node
		fixed = 40
	}
	if len(msg) < fixed {
		return NDMalformed
	}
	for o := msg[fixed:]; len(o) > 0; {
		if len(o) < 2 {
			return NDMalformed
		}
		size := int(o[1]) * 8
		if size == 0 || size > len(o) {
			return NDMalformed
		}
		if o[0] == ownLL && ownLL != 0 && !bytes.Equal(o[2:8], ethSrc) {
			if ownLL == ndOptTargetLL {
				return NDTargetMismatch
			}
			return NDSourceMismatch
		}
		o = o[size:]
	}
	if typ == layers.ICMPv6TypeNeighborAdvertisement {
		target := [16]byte(msg[8:24])
		return c.claim6(&target, NDTargetOutside)
	}
	return Pass
}

// claim6 checks an IPv6 address the frame uses and queues it for binding.
func (c *Checker) claim6(a *[16]byte, outside Reason) Reason {
	if c.p.isTap6(a) {
		return TapAddrClaimed
	}
	if !c.p.allowed6(a) {
		return outside
	}
	c.addClaim(*a)
	return Pass
}
