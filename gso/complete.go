package gso

import "encoding/binary"

// CompleteChecksum finishes the L4 checksum of a frame that has NEEDS_CSUM,
// in place, for a port that did not negotiate checksum offload and must get
// a frame a receiver can verify. Without NEEDS_CSUM it does nothing. The
// GSO fields are ignored: a superframe is completed by Split, segment by
// segment.
//
// When csum_start and csum_offset point at the frame's own TCP or UDP
// checksum (what Check demands in secure mode), the checksum is computed
// from scratch, pseudo-header included, so it is right even if the sender's
// partial sum was not. Otherwise (a guest with generic checksum offload
// finishing a tunnelled packet's inner checksum, say, which only -U lets
// through) it does what the device would: sum from csum_start to the end of
// the IP packet, the partial sum included, and store the result at
// csum_start+csum_offset; both must lie past the frame's outer TCP/UDP
// header (past the IP headers for other protocols) and inside the IP packet,
// so the write never touches a header secure mode judges.
func CompleteChecksum(frame []byte, hdr VirtioNetHdr) error {
	if hdr.Flags&FlagNeedsCsum == 0 {
		return nil
	}
	if len(frame) > MaxFrameLen {
		return ErrTooLong
	}
	l, err := parse(frame)
	if err == ErrGSOTypeMismatch {
		return ErrCsumOffset
	}
	if err != nil {
		return err
	}
	if checkCsumOffsets(&l, hdr) == nil {
		end, err := l.datagramEnd(frame)
		if err != nil {
			return err
		}
		setL4Checksum(frame, &l, end)
		return nil
	}
	start, at := int(hdr.CsumStart), int(hdr.CsumStart)+int(hdr.CsumOffset)
	if start < l.data || at+2 > l.end {
		return ErrCsumOffset
	}
	c := Checksum(frame[start:l.end], 0)
	if c == 0 {
		c = 0xffff // as the kernel's skb_checksum_help: 0 may mean "none"
	}
	binary.BigEndian.PutUint16(frame[at:], c)
	return nil
}

// setL4Checksum writes the full TCP/UDP checksum of a parsed frame whose L4
// packet ends at end.
func setL4Checksum(frame []byte, l *layout, end int) {
	at := l.l4 + l.csumOffset()
	frame[at], frame[at+1] = 0, 0
	c := Checksum(frame[l.l4:end], fold(l.pseudo(frame, end)))
	if c == 0 && l.proto == protoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[at:], c)
}

// pseudo is the pseudo-header sum of the frame's L4 packet ending at end.
func (l *layout) pseudo(frame []byte, end int) uint64 {
	if l.ipv6 {
		return pseudoIPv6(frame[l.l3+8:], frame[l.l3+24:], l.proto, end-l.l4)
	}
	return pseudoIPv4(frame[l.l3+12:], frame[l.l3+16:], l.proto, end-l.l4)
}

// PartialChecksum prepares a frame, in place, for a device that finishes
// checksums and cuts superframes (a TAP with TUNSETOFFLOAD, a guest with
// GUEST_CSUM/GUEST_TSO), and rewrites hdr to match it. A TSO write to a TAP
// needs exactly this: a valid IPv4 header checksum, the pseudo-header sum
// in the TCP/UDP checksum field, NEEDS_CSUM with csum_start and csum_offset
// at that field. hdr_len becomes the real length of the headers, DATA_VALID
// is cleared; gso_type and gso_size are kept and must fit the frame (as
// Check has them). The frame must be TCP or UDP over IP.
//
// The sender's partial sum, IPv4 checksum and offsets are not trusted: a
// frame forwarded whole from a guest is rewritten as if the switch had
// built it.
func PartialChecksum(frame []byte, hdr *VirtioNetHdr) error {
	if len(frame) > MaxFrameLen {
		return ErrTooLong
	}
	if err := knownType(hdr.GSOType); err != nil {
		return err
	}
	var l layout
	var err *Error
	if hdr.GSOType == GSONone {
		l, err = parse(frame)
		if err == ErrGSOTypeMismatch || (err == nil && !l.isTCPOrUDP()) {
			return ErrCsumOffset
		}
	} else {
		l, err = parseSuperframe(frame, *hdr)
	}
	if err != nil {
		return err
	}
	end := l.end // a superframe's UDP length means nothing
	if hdr.GSOType == GSONone {
		if end, err = l.datagramEnd(frame); err != nil {
			return err
		}
	}
	if !l.ipv6 {
		binary.BigEndian.PutUint16(frame[l.l3+10:], IPv4HeaderChecksum(frame[l.l3:l.l4]))
	}
	binary.BigEndian.PutUint16(frame[l.l4+l.csumOffset():], fold(l.pseudo(frame, end)))
	hdr.Flags = FlagNeedsCsum
	hdr.HdrLen = uint16(l.data)
	hdr.CsumStart = uint16(l.l4)
	hdr.CsumOffset = uint16(l.csumOffset())
	return nil
}
