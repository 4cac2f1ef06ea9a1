package gso

import "encoding/binary"

const (
	tcpFlagFIN = 0x01
	tcpFlagPSH = 0x08
	tcpFlagCWR = 0x80
)

// Segments returns how many frames Split cuts frame into (1 for a frame
// that is not a superframe), or the error Split would return for it, out
// of buffers aside.
func Segments(frame []byte, hdr VirtioNetHdr) (int, error) {
	if len(frame) > MaxFrameLen {
		return 0, ErrTooLong
	}
	if err := knownType(hdr.GSOType); err != nil {
		return 0, err
	}
	if hdr.GSOType == GSONone {
		return 1, nil
	}
	l, err := parseSuperframe(frame, hdr)
	if err != nil {
		return 0, err
	}
	return segments(&l, int(hdr.GSOSize)), nil
}

func segments(l *layout, gsoSize int) int {
	payload := l.end - l.data
	if payload <= gsoSize {
		return 1 // a superframe that fits one segment is still a frame
	}
	return (payload + gsoSize - 1) / gsoSize
}

// Split cuts a superframe into frames of at most hdr.GSOSize bytes of
// payload each, writing frame i into out[i][offset:] and its length into
// sizes[i], and returns how many it wrote. The input frame is only read,
// so it may be forwarded whole to other ports at the same time.
//
// Each segment gets a copy of the superframe's Ethernet (and VLAN), IP and
// TCP/UDP headers with:
//   - IPv4: total length, ID + i, header checksum; IPv6: payload length;
//   - TCP (TSO): sequence number advanced by the payload before it, FIN and
//     PSH only on the last segment, CWR only on the first;
//   - UDP (USO): the datagram's own length (the superframe's UDP length is
//     ignored, as the kernel's __udp_gso_segment ignores it: the IP length
//     says where the payload ends);
//   - a full TCP/UDP checksum, whatever the superframe's field held.
//
// A frame whose gso_type is NONE is copied into out[0] whole, its checksum
// completed if it has NEEDS_CSUM (as CompleteChecksum does), so the caller
// needs no special case.
//
// The header's gso_type and gso_size are used; hdr_len, csum_start and
// csum_offset are not: the frame is parsed instead. Errors are *Error values
// (the frame's fault, with the Reason Check gives it) or ErrTooManySegments
// and ErrShortBuffer (the caller's); either way out is left unspecified.
// Split allocates nothing.
func Split(frame []byte, hdr VirtioNetHdr, out [][]byte, sizes []int, offset int) (int, error) {
	if len(frame) > MaxFrameLen {
		return 0, ErrTooLong
	}
	if err := knownType(hdr.GSOType); err != nil {
		return 0, err
	}
	if hdr.GSOType == GSONone {
		return copyWhole(frame, hdr, out, sizes, offset)
	}
	l, err := parseSuperframe(frame, hdr)
	if err != nil {
		return 0, err
	}
	gsoSize := int(hdr.GSOSize)
	n := segments(&l, gsoSize)
	if len(out) < n || len(sizes) < n {
		return 0, ErrTooManySegments
	}
	// Every buffer is checked before the first is written: a failed Split
	// never leaves half its segments behind for a caller to send.
	if offset < 0 {
		return 0, ErrShortBuffer
	}
	for i := range n {
		if len(out[i])-offset < l.data+min(gsoSize, l.end-l.data-i*gsoSize) {
			return 0, ErrShortBuffer
		}
	}

	// The pseudo-header without its length, folded so that adding a
	// segment's length cannot overflow.
	var pseudo uint64
	if l.ipv6 {
		pseudo = uint64(fold(pseudoIPv6(frame[l.l3+8:], frame[l.l3+24:], l.proto, 0)))
	} else {
		pseudo = uint64(fold(pseudoIPv4(frame[l.l3+12:], frame[l.l3+16:], l.proto, 0)))
	}
	var (
		ipID  = binary.BigEndian.Uint16(frame[l.l3+4:])
		seq   uint32
		flags uint8
	)
	if l.proto == protoTCP {
		seq = binary.BigEndian.Uint32(frame[l.l4+4:])
		flags = frame[l.l4+13]
	}
	csumAt := l.l4 + l.csumOffset()

	for i := range n {
		start := l.data + i*gsoSize
		stop := min(start+gsoSize, l.end)
		seg := out[i][offset : offset+l.data+stop-start]
		copy(seg, frame[:l.data])
		copy(seg[l.data:], frame[start:stop])

		if l.ipv6 {
			binary.BigEndian.PutUint16(seg[l.l3+4:], uint16(len(seg)-l.l3-ipv6HeaderLen))
		} else {
			binary.BigEndian.PutUint16(seg[l.l3+2:], uint16(len(seg)-l.l3))
			// The kernel gives every segment its own ID (unless the sender
			// asked for fixed IDs, which virtio cannot say): receivers
			// reassembling a fragment of one must not mix it with another.
			binary.BigEndian.PutUint16(seg[l.l3+4:], ipID+uint16(i))
			binary.BigEndian.PutUint16(seg[l.l3+10:], IPv4HeaderChecksum(seg[l.l3:l.l4]))
		}

		l4len := len(seg) - l.l4
		if l.proto == protoTCP {
			binary.BigEndian.PutUint32(seg[l.l4+4:], seq+uint32(i*gsoSize))
			f := flags
			if i > 0 {
				f &^= tcpFlagCWR // the congestion window was reduced once
			}
			if i < n-1 {
				f &^= tcpFlagFIN | tcpFlagPSH // the end of the data is at the end
			}
			seg[l.l4+13] = f
		} else {
			binary.BigEndian.PutUint16(seg[l.l4+4:], uint16(l4len))
		}

		seg[csumAt], seg[csumAt+1] = 0, 0
		c := Checksum(seg[l.l4:], fold(pseudo+uint64(l4len)))
		if c == 0 && l.proto == protoUDP {
			c = 0xffff // 0 means "no checksum" in UDP (RFC 768)
		}
		binary.BigEndian.PutUint16(seg[csumAt:], c)
		sizes[i] = len(seg)
	}
	return n, nil
}

// copyWhole is Split for a frame that is not a superframe.
func copyWhole(frame []byte, hdr VirtioNetHdr, out [][]byte, sizes []int, offset int) (int, error) {
	if len(out) < 1 || len(sizes) < 1 {
		return 0, ErrTooManySegments
	}
	if offset < 0 || len(out[0])-offset < len(frame) {
		return 0, ErrShortBuffer
	}
	seg := out[0][offset : offset+len(frame)]
	copy(seg, frame)
	if err := CompleteChecksum(seg, hdr); err != nil {
		return 0, err
	}
	sizes[0] = len(seg)
	return 1, nil
}
