package gso

import (
	"bytes"
	"testing"
)

func TestVirtioNetHdrLayout(t *testing.T) {
	// struct virtio_net_hdr_mrg_rxbuf, little-endian: flags, gso_type,
	// hdr_len, gso_size, csum_start, csum_offset, num_buffers.
	wire := []byte{0x01, 0x81, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0x03, 0x00}
	want := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4 | GSOECN, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16, NumBuffers: 3}
	var h VirtioNetHdr
	if err := h.Decode(wire, HdrSizeMrgRxbuf); err != nil || h != want {
		t.Fatalf("Decode 12: %+v %v", h, err)
	}
	b := make([]byte, 12)
	if err := want.Encode(b, HdrSizeMrgRxbuf); err != nil || !bytes.Equal(b, wire) {
		t.Fatalf("Encode 12: %x %v", b, err)
	}
	// The 10-byte form has no num_buffers: Decode zeroes it, Encode leaves
	// bytes 10-11 alone.
	h.NumBuffers = 9
	if err := h.Decode(wire, HdrSize); err != nil || h.NumBuffers != 0 || h.CsumOffset != 16 {
		t.Fatalf("Decode 10: %+v %v", h, err)
	}
	b = bytes.Repeat([]byte{0xee}, 12)
	if err := want.Encode(b, HdrSize); err != nil || !bytes.Equal(b[:10], wire[:10]) || b[10] != 0xee {
		t.Fatalf("Encode 10: %x %v", b, err)
	}
	for _, c := range []struct{ buf, size int }{{9, 10}, {11, 12}, {12, 11}, {20, 0}} {
		if h.Decode(make([]byte, c.buf), c.size) != ErrHdrSize || want.Encode(make([]byte, c.buf), c.size) != ErrHdrSize {
			t.Fatalf("buffer %d size %d accepted", c.buf, c.size)
		}
	}
}

func TestGSOTypeString(t *testing.T) {
	for typ, want := range map[GSOType]string{
		GSONone: "none", GSOTCPv4: "tcpv4", GSOTCPv6 | GSOECN: "tcpv6+ecn",
		GSOUDP: "udp", GSOUDPL4: "udp-l4", 2: "gso-2",
	} {
		if typ.String() != want {
			t.Errorf("%d: %q, want %q", uint8(typ), typ.String(), want)
		}
	}
}
