package gso

// Check is secure mode's judgement of a virtio_net_hdr against the frame it
// comes with (issue 9, item 3): OK if the header describes the frame, else
// the first lie found. mtu is the IP MTU of the ports the frame may be cut
// for (1500 by default): a segment of gso_size bytes of payload after the
// frame's IP and TCP/UDP headers must fit it. mtu <= 0 skips that test.
//
// The header's hdr_len is ignored: it is a hint for buffer layout, wrong in
// harmless ways in practice, and nothing here reads it (PartialChecksum
// rewrites it before a frame goes to a device). DATA_VALID is allowed: the
// kernel sets it on TAP reads, and it only ever tells a receiver it may skip
// a check.
//
// Check only judges the header. Whether the frame's addresses and protocols
// are allowed is the rest of secure mode's business, and the frame's own
// headers (IPv4 checksum, lengths) are judged there too.
func Check(frame []byte, hdr VirtioNetHdr, mtu int) Reason {
	if err := check(frame, hdr, mtu); err != nil {
		return err.reason
	}
	return OK
}

func check(frame []byte, hdr VirtioNetHdr, mtu int) *Error {
	if len(frame) > MaxFrameLen {
		return ErrTooLong
	}
	switch hdr.Undefined() {
	case FlagsInvalid:
		return ErrFlags
	case GSOTypeUnknown:
		return ErrGSOType
	}
	if err := knownType(hdr.GSOType); err != nil {
		return err
	}
	needsCsum := hdr.Flags&FlagNeedsCsum != 0
	if hdr.GSOType == GSONone {
		if !needsCsum {
			return nil // an ordinary frame: nothing in the header to believe
		}
		l, err := parse(frame)
		if err == ErrGSOTypeMismatch {
			return ErrCsumOffset // not IP: there is no L4 checksum to point at
		}
		if err != nil {
			return err
		}
		if err := checkCsumOffsets(&l, hdr); err != nil {
			return err
		}
		_, err = l.datagramEnd(frame)
		return err
	}

	l, err := parseSuperframe(frame, hdr)
	if err != nil {
		return err
	}
	if !needsCsum {
		return ErrCsumMissing
	}
	if err := checkCsumOffsets(&l, hdr); err != nil {
		return err
	}
	if mtu > 0 && l.data-l.l3+int(hdr.GSOSize) > mtu {
		return ErrGSOSize
	}
	return nil
}

// Undefined says whether h has bits virtio-net defines for no driver to
// send, whatever was negotiated: flags other than NEEDS_CSUM and DATA_VALID
// (FlagsInvalid; DATA_VALID is the device's, but a front-end passing on a
// TAP's headers carries it from the kernel), or a gso_type kind other than
// NONE, TCPV4, TCPV6, UDP and UDP_L4 (GSOTypeUnknown); OK otherwise.
// Whether the bits left are what the sender may send, and fit the frame,
// is Offloads.Takes' and Check's to say.
func (h VirtioNetHdr) Undefined() Reason {
	if h.Flags&^(FlagNeedsCsum|FlagDataValid) != 0 {
		return FlagsInvalid
	}
	switch h.GSOType.Kind() {
	case GSONone, GSOTCPv4, GSOUDP, GSOTCPv6, GSOUDPL4:
		return OK
	}
	return GSOTypeUnknown
}

// knownType refuses gso_type values that are not superframe kinds this
// package cuts: unknown values, UFO, and ECN on anything but TCP.
func knownType(t GSOType) *Error {
	switch t.Kind() {
	case GSONone, GSOUDPL4:
		if t&GSOECN != 0 {
			return ErrGSOType
		}
	case GSOTCPv4, GSOTCPv6:
	case GSOUDP:
		return ErrUFO
	default:
		return ErrGSOType
	}
	return nil
}

// parseSuperframe parses a frame whose header has a GSO type (already
// checked by knownType) and checks what every superframe must be: the
// protocol the type says, a gso_size, and no bytes past its IP packet.
// Trailing bytes are refused because a device cutting the superframe would
// take them for payload while every IP length field says otherwise.
func parseSuperframe(frame []byte, hdr VirtioNetHdr) (layout, *Error) {
	l, err := parse(frame)
	if err != nil {
		return l, err
	}
	var ok bool
	switch hdr.GSOType.Kind() {
	case GSOTCPv4:
		ok = !l.ipv6 && l.proto == protoTCP
	case GSOTCPv6:
		ok = l.ipv6 && l.proto == protoTCP
	case GSOUDPL4:
		ok = l.proto == protoUDP
	}
	if !ok {
		return l, ErrGSOTypeMismatch
	}
	if l.end != len(frame) && len(frame) > minEthernetFrame {
		return l, ErrTrailingBytes
	}
	if hdr.GSOSize == 0 {
		return l, ErrGSOSize
	}
	return l, nil
}

// checkCsumOffsets accepts exactly one csum_start and csum_offset for a
// frame: its TCP or UDP header and that header's checksum field. Anything
// else would have a device write a checksum over bytes secure mode judged
// (an address, a port).
func checkCsumOffsets(l *layout, hdr VirtioNetHdr) *Error {
	if !l.isTCPOrUDP() || int(hdr.CsumStart) != l.l4 || int(hdr.CsumOffset) != l.csumOffset() {
		return ErrCsumOffset
	}
	return nil
}
