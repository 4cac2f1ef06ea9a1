package gso

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// The two sizes of the header before every frame (include/uapi/linux/virtio_net.h).
const (
	// HdrSize is struct virtio_net_hdr: a TAP's default (TUNSETVNETHDRSZ),
	// and a legacy virtio-net device without MRG_RXBUF.
	HdrSize = 10
	// HdrSizeMrgRxbuf is struct virtio_net_hdr_mrg_rxbuf: the header plus
	// num_buffers, used with VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF.
	HdrSizeMrgRxbuf = 12
)

// Flags of virtio_net_hdr.flags.
const (
	// FlagNeedsCsum: the L4 checksum is not finished. The field at
	// csum_start+csum_offset holds the pseudo-header sum; the device sums
	// from csum_start to the end and stores the complement there.
	FlagNeedsCsum uint8 = 1
	// FlagDataValid: the checksum was verified by the sender (the kernel,
	// on a TAP read). Meaningful towards a guest, never from one.
	FlagDataValid uint8 = 2
	// FlagRSCInfo: coalescing statistics in csum_start/csum_offset; only
	// a device sets it, with VIRTIO_NET_F_RSC_EXT, which nobody here offers.
	FlagRSCInfo uint8 = 4
)

// GSOType is virtio_net_hdr.gso_type: what kind of superframe the frame is.
type GSOType uint8

// The values of gso_type. ECN is a bit or-ed into a TCP type.
const (
	GSONone GSOType = 0
	// GSOTCPv4 and GSOTCPv6: TSO, cut into TCP segments of gso_size bytes
	// of payload.
	GSOTCPv4 GSOType = 1
	// GSOUDP is UFO: one UDP datagram cut into IP fragments. The kernel
	// stopped producing it in 4.14 and a TAP cannot negotiate it; see
	// ErrUFO for why it is refused here.
	GSOUDP   GSOType = 3
	GSOTCPv6 GSOType = 4
	// GSOUDPL4 is USO: cut into UDP datagrams of gso_size bytes each, every
	// one with its own UDP header (UDP_SEGMENT, TUN_F_USO4/6 on 6.2+).
	GSOUDPL4 GSOType = 5
	// GSOECN: the TCP superframe has CWR set; only the first segment keeps
	// it (the sender negotiated HOST_ECN).
	GSOECN GSOType = 0x80
)

// Kind is the type without the ECN bit.
func (t GSOType) Kind() GSOType { return t &^ GSOECN }

func (t GSOType) String() string {
	var s string
	switch t.Kind() {
	case GSONone:
		s = "none"
	case GSOTCPv4:
		s = "tcpv4"
	case GSOUDP:
		s = "udp"
	case GSOTCPv6:
		s = "tcpv6"
	case GSOUDPL4:
		s = "udp-l4"
	default:
		s = "gso-" + strconv.Itoa(int(t.Kind()))
	}
	if t&GSOECN != 0 {
		s += "+ecn"
	}
	return s
}

// VirtioNetHdr is struct virtio_net_hdr, with num_buffers of the 12-byte
// form. Every field is what the sender wrote: nothing here uses HdrLen,
// CsumStart or CsumOffset to locate a header (see Check).
type VirtioNetHdr struct {
	Flags   uint8
	GSOType GSOType
	// HdrLen is the length of the headers before the payload, counted from
	// the first byte of the Ethernet frame. A hint for the receiver's
	// buffer layout; wrong values are common and harmless here.
	HdrLen uint16
	// GSOSize is the payload of each segment: the MSS for TCP, the datagram
	// payload for USO.
	GSOSize uint16
	// CsumStart is where checksumming starts, from the frame's first byte.
	CsumStart uint16
	// CsumOffset is where, from CsumStart, the checksum is stored.
	CsumOffset uint16
	// NumBuffers is the 12-byte form's count of merged RX buffers; only
	// the RX path with MRG_RXBUF uses it.
	NumBuffers uint16
}

// ErrHdrSize is returned by Decode and Encode for a size other than HdrSize
// or HdrSizeMrgRxbuf, or a buffer shorter than size.
var ErrHdrSize = errors.New("gso: virtio_net_hdr size must be 10 or 12 and fit the buffer")

// Decode reads a header of size bytes (HdrSize or HdrSizeMrgRxbuf) from the
// start of b. The fields are little-endian: virtio 1.0 says so, and a TAP
// uses the host's order, which is little-endian on every machine vknetd
// runs on (a big-endian host would set TUNSETVNETLE).
func (h *VirtioNetHdr) Decode(b []byte, size int) error {
	if (size != HdrSize && size != HdrSizeMrgRxbuf) || len(b) < size {
		return ErrHdrSize
	}
	h.Flags = b[0]
	h.GSOType = GSOType(b[1])
	h.HdrLen = binary.LittleEndian.Uint16(b[2:])
	h.GSOSize = binary.LittleEndian.Uint16(b[4:])
	h.CsumStart = binary.LittleEndian.Uint16(b[6:])
	h.CsumOffset = binary.LittleEndian.Uint16(b[8:])
	h.NumBuffers = 0
	if size == HdrSizeMrgRxbuf {
		h.NumBuffers = binary.LittleEndian.Uint16(b[10:])
	}
	return nil
}

// Encode writes the header as size bytes (HdrSize or HdrSizeMrgRxbuf) at the
// start of b; NumBuffers is dropped in the 10-byte form.
func (h *VirtioNetHdr) Encode(b []byte, size int) error {
	if (size != HdrSize && size != HdrSizeMrgRxbuf) || len(b) < size {
		return ErrHdrSize
	}
	b[0] = h.Flags
	b[1] = uint8(h.GSOType)
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
	if size == HdrSizeMrgRxbuf {
		binary.LittleEndian.PutUint16(b[10:], h.NumBuffers)
	}
	return nil
}
