package gso

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

func TestChecksumMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := randomPayload(uint64(n), n)
		init := uint16(r.Uint32())
		if got, want := Checksum(b, init), naiveChecksum(b, uint32(init)); got != want {
			t.Fatalf("len %d init %#x: %#04x, want %#04x", n, init, got, want)
		}
	}
	// All ones make every addition carry: the end-around carry must not
	// lose any of them.
	for _, n := range []int{31, 32, 33, 64, 1500, 65535, 65597} {
		b := bytes.Repeat([]byte{0xff}, n)
		if got, want := Checksum(b, 0xffff), naiveChecksum(b, 0xffff); got != want {
			t.Fatalf("all ones, len %d: %#04x, want %#04x", n, got, want)
		}
	}
}

func TestIPv4HeaderChecksum(t *testing.T) {
	// A classic worked example (Wikipedia, "IPv4 header checksum").
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if c := IPv4HeaderChecksum(h); c != 0xb861 {
		t.Fatalf("%#04x, want 0xb861", c)
	}
	// Whatever the field holds is ignored.
	h[10], h[11] = 0x12, 0x34
	if c := IPv4HeaderChecksum(h); c != 0xb861 {
		t.Fatalf("with a stale field: %#04x, want 0xb861", c)
	}
	if IPv4HeaderChecksum(h[:5]) != naiveChecksum(h[:5], 0) {
		t.Fatal("a short slice is summed as it is")
	}
}

// The pseudo-header sum plus the L4 bytes (checksum field zero) gives the
// checksum gopacket computed.
func TestPseudoHeaderSums(t *testing.T) {
	for _, s := range []frameSpec{
		{payload: randomPayload(1, 1001)},
		{udp: true, payload: randomPayload(2, 77)},
		{v6: true, payload: randomPayload(3, 1400)},
		{v6: true, udp: true, payload: randomPayload(4, 3)},
	} {
		f := buildFrame(t, s)
		l, err := parse(f)
		if err != nil {
			t.Fatal(err)
		}
		at := l.l4 + l.csumOffset()
		want := binary.BigEndian.Uint16(f[at:])
		l4 := bytes.Clone(f[l.l4:l.end])
		l4[at-l.l4], l4[at-l.l4+1] = 0, 0
		var ph uint16
		if s.v6 {
			ph = PseudoHeaderSumIPv6(f[l.l3+8:l.l3+24], f[l.l3+24:l.l3+40], l.proto, len(l4))
		} else {
			ph = PseudoHeaderSumIPv4(f[l.l3+12:l.l3+16], f[l.l3+16:l.l3+20], l.proto, len(l4))
		}
		if got := Checksum(l4, ph); got != want {
			t.Fatalf("%+v: %#04x, gopacket has %#04x", s, got, want)
		}
	}
}

// makePartial turns a frame with a full checksum into what a sender with
// checksum offload writes: the pseudo-header sum in the field.
func makePartial(t *testing.T, full []byte) ([]byte, VirtioNetHdr) {
	t.Helper()
	l, err := parse(full)
	if err != nil {
		t.Fatal(err)
	}
	f := bytes.Clone(full)
	binary.BigEndian.PutUint16(f[l.l4+l.csumOffset():], fold(l.pseudo(f, l.end)))
	return f, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: uint16(l.l4), CsumOffset: uint16(l.csumOffset())}
}

func TestCompleteChecksum(t *testing.T) {
	for _, s := range []frameSpec{
		{payload: randomPayload(1, 1460)},
		{tcpOpts: true, ipOptions: true, payload: randomPayload(2, 999)},
		{udp: true, payload: randomPayload(3, 1472)},
		{v6: true, payload: randomPayload(4, 1440)},
		{v6: true, udp: true, hopByHop: true, payload: randomPayload(5, 101)},
		{vlans: 2, payload: randomPayload(6, 10)},
		{udp: true}, // padded to 60 bytes: padding is not summed
	} {
		full := buildFrame(t, s)
		partial, hdr := makePartial(t, full)
		if err := CompleteChecksum(partial, hdr); err != nil || !bytes.Equal(partial, full) {
			t.Fatalf("%+v: %v\n got %x\nwant %x", s, err, partial, full)
		}
		// A sender's wrong partial sum does not make a wrong checksum.
		at := int(hdr.CsumStart + hdr.CsumOffset)
		partial[at], partial[at+1] = 0xde, 0xad
		if err := CompleteChecksum(partial, hdr); err != nil || !bytes.Equal(partial, full) {
			t.Fatalf("%+v, garbage partial sum: %v", s, err)
		}
		// No NEEDS_CSUM, nothing to do.
		partial[at] = 0
		if err := CompleteChecksum(partial, VirtioNetHdr{}); err != nil || partial[at] != 0 {
			t.Fatalf("without NEEDS_CSUM the frame changed (%v)", err)
		}
	}
}

// A checksum that comes to 0 is stored as 0xffff in UDP, where 0 means "no
// checksum", by Split and CompleteChecksum both.
func TestUDPChecksumZero(t *testing.T) {
	payload := make([]byte, 100)
	f := buildFrame(t, frameSpec{udp: true, payload: payload})
	l, _ := parse(f)
	// Choosing the first payload word as the current checksum makes the
	// sum 0xffff, so the checksum becomes 0.
	copy(f[l.data:], f[l.l4+6:l.l4+8])
	partial, hdr := makePartial(t, f)
	if err := CompleteChecksum(partial, hdr); err != nil {
		t.Fatal(err)
	}
	if c := binary.BigEndian.Uint16(partial[l.l4+6:]); c != 0xffff {
		t.Fatalf("CompleteChecksum stored %#04x, want 0xffff", c)
	}
	verifySegment(t, partial)
	out, sizes := segmentBuffers(1, 200)
	if _, err := Split(partial, VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4, GSOSize: 100}, out, sizes, 0); err != nil {
		t.Fatal(err)
	}
	if c := binary.BigEndian.Uint16(out[0][l.l4+6:]); c != 0xffff {
		t.Fatalf("Split stored %#04x, want 0xffff", c)
	}
}

// csum_start and csum_offset elsewhere than the outer TCP/UDP checksum are
// served as a device would (a tunnelled inner checksum), but only past the
// outer L4 header and inside the IP packet.
func TestCompleteChecksumGeneric(t *testing.T) {
	full := buildFrame(t, frameSpec{udp: true, payload: randomPayload(7, 200)})
	l, _ := parse(full)
	inner := l.data + 20 // an "inner" header 20 bytes into the UDP payload
	f := bytes.Clone(full)
	hdr := VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: uint16(inner), CsumOffset: 16}
	binary.BigEndian.PutUint16(f[inner+16:], 0x1234) // the inner partial sum
	if err := CompleteChecksum(f, hdr); err != nil {
		t.Fatal(err)
	}
	// The receiver adds the pseudo-header the partial sum stood for.
	if naiveChecksum(f[inner:l.end], 0x1234) != 0 {
		t.Fatal("the inner checksum does not verify")
	}
	if !bytes.Equal(f[:inner+16], full[:inner+16]) || !bytes.Equal(f[inner+18:], full[inner+18:]) {
		t.Fatal("bytes other than the inner checksum changed")
	}

	for _, c := range []struct {
		name  string
		start int
		off   int
	}{
		{"at the IP header", l.l3, 10},
		{"inside the UDP header", l.l4 + 2, 0},
		{"udp offset on tcp's", l.l4, 16},
		{"field past the end", l.end - 1, 0},
		{"offset past the end", l.data, 60000},
	} {
		f := bytes.Clone(full)
		err := CompleteChecksum(f, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: uint16(c.start), CsumOffset: uint16(c.off)})
		if err != ErrCsumOffset || !bytes.Equal(f, full) {
			t.Fatalf("%s: %v, frame changed: %v", c.name, err, !bytes.Equal(f, full))
		}
	}
	arp := bytes.Clone(full[:42])
	arp[12], arp[13] = 0x08, 0x06
	if err := CompleteChecksum(arp, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 14, CsumOffset: 6}); err != ErrCsumOffset {
		t.Fatalf("ARP: %v", err)
	}
	if err := CompleteChecksum(full[:30], VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 34, CsumOffset: 6}); err != ErrTruncated {
		t.Fatalf("truncated: %v", err)
	}
}

func TestPartialChecksum(t *testing.T) {
	for _, c := range []struct {
		spec frameSpec
		typ  GSOType
	}{
		{frameSpec{payload: randomPayload(1, 60000)}, GSOTCPv4},
		{frameSpec{v6: true, tcpOpts: true, payload: randomPayload(2, 60000)}, GSOTCPv6},
		{frameSpec{udp: true, vlans: 1, payload: randomPayload(3, 6000)}, GSOUDPL4},
		{frameSpec{payload: randomPayload(4, 1000)}, GSONone},
		{frameSpec{v6: true, udp: true, payload: randomPayload(5, 1000)}, GSONone},
	} {
		full := buildFrame(t, c.spec)
		f := bytes.Clone(full)
		l, _ := parse(f)
		if !c.spec.v6 {
			f[l.l3+10] ^= 0xff // a stale IPv4 checksum is recomputed
		}
		hdr := VirtioNetHdr{Flags: FlagDataValid, GSOType: c.typ, GSOSize: 1400, HdrLen: 9999, CsumStart: 1, CsumOffset: 2}
		if err := PartialChecksum(f, &hdr); err != nil {
			t.Fatal(err)
		}
		want := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: c.typ, GSOSize: 1400, HdrLen: uint16(l.data), CsumStart: uint16(l.l4), CsumOffset: uint16(l.csumOffset())}
		if hdr != want {
			t.Fatalf("%v: header %+v, want %+v", c.typ, hdr, want)
		}
		if got := binary.BigEndian.Uint16(f[l.l4+l.csumOffset():]); got != fold(l.pseudo(f, l.end)) {
			t.Fatalf("%v: L4 field %#04x is not the pseudo-header sum", c.typ, got)
		}
		if r := Check(f, hdr, 1500); r != OK {
			t.Fatalf("%v: Check of PartialChecksum's output: %v", c.typ, r)
		}
		// Finishing the partial sum gives back the original frame.
		if err := CompleteChecksum(f, hdr); err != nil || !bytes.Equal(f, full) {
			t.Fatalf("%v: partial then complete is not the original (%v)", c.typ, err)
		}
	}

	tcp := buildFrame(t, frameSpec{payload: randomPayload(6, 100)})
	for _, c := range []struct {
		name  string
		frame []byte
		hdr   VirtioNetHdr
		want  error
	}{
		{"arp", append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 6}, make([]byte, 28)...), VirtioNetHdr{}, ErrCsumOffset},
		{"icmp", func() []byte { f := bytes.Clone(tcp); f[23] = 1; return f }(), VirtioNetHdr{}, ErrCsumOffset},
		{"tcpv6 on ipv4", tcp, VirtioNetHdr{GSOType: GSOTCPv6, GSOSize: 1000}, ErrGSOTypeMismatch},
		{"gso_size 0", tcp, VirtioNetHdr{GSOType: GSOTCPv4}, ErrGSOSize},
		{"ufo", tcp, VirtioNetHdr{GSOType: GSOUDP, GSOSize: 1000}, ErrUFO},
		{"truncated", tcp[:40], VirtioNetHdr{}, ErrTruncated},
		{"too long", make([]byte, MaxFrameLen+1), VirtioNetHdr{}, ErrTooLong},
	} {
		f := bytes.Clone(c.frame)
		h := c.hdr
		if err := PartialChecksum(f, &h); err != c.want || !bytes.Equal(f, c.frame) || h != c.hdr {
			t.Fatalf("%s: %v, want %v; frame or header changed: %v", c.name, err, c.want, !bytes.Equal(f, c.frame) || h != c.hdr)
		}
	}
}
