package gso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// checkSplit verifies Split's output for a superframe built from s: every
// segment valid, the payloads concatenated equal to s.payload, sequence
// numbers contiguous, flags and IPv4 IDs as the kernel sets them, and the
// rest of every header copied from the superframe.
func checkSplit(t *testing.T, s frameSpec, super []byte, segs [][]byte, gsoSize int) {
	t.Helper()
	want := (len(s.payload) + gsoSize - 1) / gsoSize
	if want == 0 {
		want = 1
	}
	if len(segs) != want {
		t.Fatalf("%d segments, want %d", len(segs), want)
	}
	var got []byte
	// Headers end where the payload starts; gopacket pads a short frame to
	// 60 bytes, so count back from the IP packet's end, not the frame's.
	sd, _, _ := decode(super)
	ipEnd := len(super)
	if sd.ip4 != nil {
		ipEnd = ipStart(super) + int(sd.ip4.Length)
	}
	hdrLen := ipEnd - len(s.payload)
	for i, seg := range segs {
		d := verifySegment(t, seg)
		if len(d.payload) > gsoSize || (i < len(segs)-1 && len(d.payload) != gsoSize) {
			t.Fatalf("segment %d: %d bytes of payload, gso_size %d", i, len(d.payload), gsoSize)
		}
		if len(seg) != hdrLen+len(d.payload) {
			t.Fatalf("segment %d: %d bytes, want headers %d + payload %d", i, len(seg), hdrLen, len(d.payload))
		}
		if d.tcp != nil {
			if wantSeq := s.seq + uint32(len(got)); d.tcp.Seq != wantSeq {
				t.Fatalf("segment %d: seq %d, want %d", i, d.tcp.Seq, wantSeq)
			}
			last, first := i == len(segs)-1, i == 0
			f := s.flags
			if f == 0 {
				f = 0x10
			}
			if d.tcp.FIN != (last && f&0x01 != 0) || d.tcp.PSH != (last && f&0x08 != 0) || d.tcp.CWR != (first && f&0x80 != 0) {
				t.Fatalf("segment %d of %d: FIN %v PSH %v CWR %v from flags %#x", i, len(segs), d.tcp.FIN, d.tcp.PSH, d.tcp.CWR, f)
			}
			if d.tcp.ACK != (f&0x10 != 0) || d.tcp.ECE != (f&0x40 != 0) || d.tcp.SYN != (f&0x02 != 0) {
				t.Fatalf("segment %d: flags other than FIN/PSH/CWR changed", i)
			}
		}
		if d.ip4 != nil && d.ip4.Id != s.ipID+uint16(i) {
			t.Fatalf("segment %d: IPv4 ID %d, want %d", i, d.ip4.Id, s.ipID+uint16(i))
		}
		// Apart from the fields Split rewrites, every header byte is the
		// superframe's.
		masked := func(f []byte) []byte {
			h := bytes.Clone(f[:hdrLen])
			l3 := ipStart(f)
			if d.ip4 != nil {
				clear(h[l3+2 : l3+6])
				clear(h[l3+10 : l3+12])
				l3 += int(h[l3]&0xf) * 4
			} else {
				clear(h[l3+4 : l3+6])
				l3 = hdrLen - 20
				if s.udp {
					l3 = hdrLen - 8
				} else if s.tcpOpts {
					l3 = hdrLen - 32
				}
			}
			if s.udp {
				clear(h[l3+4 : l3+8])
			} else {
				clear(h[l3+4 : l3+8])
				h[l3+13] &^= 0x89
				clear(h[l3+16 : l3+18])
			}
			return h
		}
		if !bytes.Equal(masked(seg), masked(super)) {
			t.Fatalf("segment %d: headers differ from the superframe's beyond the rewritten fields:\n%x\n%x", i, masked(seg), masked(super))
		}
		got = append(got, d.payload...)
	}
	if !bytes.Equal(got, s.payload) {
		t.Fatalf("segments carry %d bytes of payload that differ from the superframe's %d", len(got), len(s.payload))
	}
}

func TestSplit(t *testing.T) {
	big := randomPayload(1, 65535-20-32)
	cases := []struct {
		name string
		spec frameSpec
		typ  GSOType
		gso  int
	}{
		{"tcp4 64KiB mss 1448 timestamps", frameSpec{tcpOpts: true, flags: 0x18 | 0x01 | 0x80, seq: 1000, ipID: 7, payload: big}, GSOTCPv4, 1448},
		{"tcp4 exact multiple", frameSpec{payload: randomPayload(2, 1460*4)}, GSOTCPv4, 1460},
		{"tcp4 one segment", frameSpec{flags: 0x19, payload: randomPayload(3, 100)}, GSOTCPv4, 1460},
		{"tcp4 no payload", frameSpec{flags: 0x11}, GSOTCPv4, 1460},
		{"tcp4 ip options", frameSpec{ipOptions: true, payload: randomPayload(4, 5000)}, GSOTCPv4, 1456},
		{"tcp4 seq and id wrap", frameSpec{seq: 0xffffff00, ipID: 0xfffe, payload: randomPayload(5, 9000)}, GSOTCPv4, 1448},
		{"tcp4 odd mss", frameSpec{payload: randomPayload(6, 10001)}, GSOTCPv4, 999},
		{"tcp4 vlan", frameSpec{vlans: 1, flags: 0x18, payload: randomPayload(7, 4000)}, GSOTCPv4, 1448},
		{"tcp4 qinq", frameSpec{vlans: 2, payload: randomPayload(8, 4000)}, GSOTCPv4, 1448},
		{"tcp4 ecn", frameSpec{flags: 0x10 | 0x80 | 0x40, payload: randomPayload(9, 4000)}, GSOTCPv4 | GSOECN, 1448},
		{"tcp6 64KiB", frameSpec{v6: true, tcpOpts: true, flags: 0x18, seq: 5, payload: randomPayload(10, 65535-32)}, GSOTCPv6, 1428},
		{"tcp6 hop-by-hop", frameSpec{v6: true, hopByHop: true, payload: randomPayload(11, 7000)}, GSOTCPv6, 1420},
		{"tcp6 vlan", frameSpec{v6: true, vlans: 1, payload: randomPayload(12, 3000)}, GSOTCPv6, 1440},
		{"uso4", frameSpec{udp: true, ipID: 100, payload: randomPayload(13, 1200*10+7)}, GSOUDPL4, 1200},
		{"uso6", frameSpec{v6: true, udp: true, payload: randomPayload(14, 1232*5)}, GSOUDPL4, 1232},
		{"uso4 odd size", frameSpec{udp: true, payload: randomPayload(15, 3333)}, GSOUDPL4, 333},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			super := buildFrame(t, c.spec)
			orig := bytes.Clone(super)
			out, sizes := segmentBuffers(64, 2048)
			hdr := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: c.typ, GSOSize: uint16(c.gso)}
			n, err := Split(super, hdr, out, sizes, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(super, orig) {
				t.Fatal("Split modified its input")
			}
			segs := make([][]byte, n)
			for i := range segs {
				segs[i] = out[i][:sizes[i]]
			}
			checkSplit(t, c.spec, super, segs, c.gso)
			if cnt, err := Segments(super, hdr); err != nil || cnt != n {
				t.Fatalf("Segments = %d, %v; Split wrote %d", cnt, err, n)
			}
		})
	}
}

// A header's hdr_len, csum_start and csum_offset do not matter to Split:
// the output is the same whatever they say.
func TestSplitIgnoresHeaderOffsets(t *testing.T) {
	super := buildFrame(t, frameSpec{tcpOpts: true, payload: randomPayload(20, 6000)})
	honest := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, HdrLen: 66, CsumStart: 34, CsumOffset: 16}
	lying := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, HdrLen: 65535, CsumStart: 3, CsumOffset: 60000}
	o1, s1 := segmentBuffers(8, 2048)
	o2, s2 := segmentBuffers(8, 2048)
	n1, err1 := Split(super, honest, o1, s1, 0)
	n2, err2 := Split(super, lying, o2, s2, 0)
	if err1 != nil || err2 != nil || n1 != n2 {
		t.Fatalf("honest: %d %v; lying: %d %v", n1, err1, n2, err2)
	}
	for i := range n1 {
		if !bytes.Equal(o1[i][:s1[i]], o2[i][:s2[i]]) {
			t.Fatalf("segment %d differs", i)
		}
	}
}

// With an offset, segments start at out[i][offset:] and the headroom is
// left alone.
func TestSplitOffset(t *testing.T) {
	super := buildFrame(t, frameSpec{payload: randomPayload(21, 3000)})
	out, sizes := segmentBuffers(4, 1600)
	for _, b := range out {
		for j := range b {
			b[j] = 0xee
		}
	}
	n, err := Split(super, VirtioNetHdr{GSOType: GSOTCPv4, GSOSize: 1448}, out, sizes, 12)
	if err != nil || n != 3 {
		t.Fatalf("n %d err %v", n, err)
	}
	for i := range n {
		if !bytes.Equal(out[i][:12], bytes.Repeat([]byte{0xee}, 12)) {
			t.Fatalf("segment %d: headroom written", i)
		}
		verifySegment(t, out[i][12:12+sizes[i]])
	}
}

// A frame with gso_type NONE comes out whole, its checksum completed if it
// asked for that.
func TestSplitNone(t *testing.T) {
	frame := buildFrame(t, frameSpec{udp: true, payload: randomPayload(22, 333)})
	l, _ := parse(frame)
	partial := bytes.Clone(frame)
	binary.BigEndian.PutUint16(partial[l.l4+6:], fold(l.pseudo(frame, l.end)))
	out, sizes := segmentBuffers(1, 1600)
	hdr := VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: uint16(l.l4), CsumOffset: 6}
	n, err := Split(partial, hdr, out, sizes, 0)
	if err != nil || n != 1 || !bytes.Equal(out[0][:sizes[0]], frame) {
		t.Fatalf("n %d err %v\n got %x\nwant %x", n, err, out[0][:sizes[0]], frame)
	}
	// Not IP at all: copied as is.
	arp := bytes.Clone(frame[:42])
	arp[12], arp[13] = 0x08, 0x06
	n, err = Split(arp, VirtioNetHdr{}, out, sizes, 0)
	if err != nil || n != 1 || !bytes.Equal(out[0][:sizes[0]], arp) {
		t.Fatalf("ARP: n %d err %v", n, err)
	}
}

func TestSplitErrors(t *testing.T) {
	tcp4 := buildFrame(t, frameSpec{payload: randomPayload(30, 4000)})
	tcp6 := buildFrame(t, frameSpec{v6: true, payload: randomPayload(31, 4000)})
	udp4 := buildFrame(t, frameSpec{udp: true, payload: randomPayload(32, 4000)})
	mod := func(f []byte, fn func([]byte)) []byte { f = bytes.Clone(f); fn(f); return f }
	hdr := func(typ GSOType, size uint16) VirtioNetHdr {
		return VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: typ, GSOSize: size}
	}
	cases := []struct {
		name  string
		frame []byte
		hdr   VirtioNetHdr
		want  error
	}{
		{"gso_size 0", tcp4, hdr(GSOTCPv4, 0), ErrGSOSize},
		{"tcpv4 on ipv6", tcp6, hdr(GSOTCPv4, 1440), ErrGSOTypeMismatch},
		{"tcpv6 on ipv4", tcp4, hdr(GSOTCPv6, 1440), ErrGSOTypeMismatch},
		{"udp_l4 on tcp", tcp4, hdr(GSOUDPL4, 1440), ErrGSOTypeMismatch},
		{"tcpv4 on udp", udp4, hdr(GSOTCPv4, 1440), ErrGSOTypeMismatch},
		{"ufo", udp4, hdr(GSOUDP, 1440), ErrUFO},
		{"unknown type", tcp4, hdr(2, 1440), ErrGSOType},
		{"ecn on udp", udp4, hdr(GSOUDPL4|GSOECN, 1440), ErrGSOType},
		{"not ip", mod(tcp4, func(f []byte) { f[12], f[13] = 0x08, 0x06 }), hdr(GSOTCPv4, 1440), ErrGSOTypeMismatch},
		{"icmp", mod(tcp4, func(f []byte) { f[14+9] = 1 }), hdr(GSOTCPv4, 1440), ErrGSOTypeMismatch},
		{"three vlan tags", append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x08, 0}, tcp4[14:]...), hdr(GSOTCPv4, 1440), ErrGSOTypeMismatch},
		{"ipv4 length past frame", mod(tcp4, func(f []byte) { binary.BigEndian.PutUint16(f[16:], uint16(len(f))) }), hdr(GSOTCPv4, 1440), ErrTruncated},
		{"ipv4 length below header", mod(tcp4, func(f []byte) { binary.BigEndian.PutUint16(f[16:], 19) }), hdr(GSOTCPv4, 1440), ErrIPHeader},
		{"ipv4 ihl 4", mod(tcp4, func(f []byte) { f[14] = 0x44 }), hdr(GSOTCPv4, 1440), ErrIPHeader},
		{"ipv4 version 5", mod(tcp4, func(f []byte) { f[14] = 0x55 }), hdr(GSOTCPv4, 1440), ErrIPHeader},
		{"ipv4 more fragments", mod(tcp4, func(f []byte) { f[14+6] |= 0x20 }), hdr(GSOTCPv4, 1440), ErrFragment},
		{"ipv4 fragment offset", mod(tcp4, func(f []byte) { f[14+7] = 1 }), hdr(GSOTCPv4, 1440), ErrFragment},
		{"ipv6 length past frame", mod(tcp6, func(f []byte) { binary.BigEndian.PutUint16(f[18:], uint16(len(f))) }), hdr(GSOTCPv6, 1440), ErrTruncated},
		{"ipv6 fragment header", mod(tcp6, func(f []byte) { f[20] = 44 }), hdr(GSOTCPv6, 1440), ErrFragment},
		{"tcp data offset 4", mod(tcp4, func(f []byte) { f[34+12] = 0x40 }), hdr(GSOTCPv4, 1440), ErrIPHeader},
		{"tcp data offset past packet", mod(tcp4[:60], func(f []byte) { binary.BigEndian.PutUint16(f[16:], 46); f[34+12] = 0xf0 }), hdr(GSOTCPv4, 1440), ErrTruncated},
		{"trailing bytes", append(bytes.Clone(tcp4), 0, 0, 0, 0), hdr(GSOTCPv4, 1440), ErrTrailingBytes},
		{"too long", make([]byte, MaxFrameLen+1), hdr(GSOTCPv4, 1440), ErrTooLong},
		{"runt", tcp4[:13], hdr(GSOTCPv4, 1440), ErrTruncated},
		{"cut in ipv4 header", tcp4[:30], hdr(GSOTCPv4, 1440), ErrTruncated},
		{"cut in ipv6 header", tcp6[:50], hdr(GSOTCPv6, 1440), ErrTruncated},
		{"cut in payload", tcp4[:2000], hdr(GSOTCPv4, 1440), ErrTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, sizes := segmentBuffers(8, 2048)
			n, err := Split(c.frame, c.hdr, out, sizes, 0)
			if !errors.Is(err, c.want) || n != 0 {
				t.Fatalf("Split = %d, %v; want %v", n, err, c.want)
			}
			var e *Error
			if errors.As(err, &e) && Check(c.frame, c.hdr, 0) != e.Reason() {
				t.Fatalf("Check says %v, Split's error has reason %v", Check(c.frame, c.hdr, 0), e.Reason())
			}
		})
	}

	t.Run("buffers", func(t *testing.T) {
		h := hdr(GSOTCPv4, 1000) // 4 segments
		out, sizes := segmentBuffers(3, 2048)
		if _, err := Split(tcp4, h, out, sizes, 0); err != ErrTooManySegments {
			t.Fatalf("3 buffers: %v", err)
		}
		out, sizes = segmentBuffers(4, 2048)
		if _, err := Split(tcp4, h, out, sizes[:3], 0); err != ErrTooManySegments {
			t.Fatalf("3 sizes: %v", err)
		}
		if _, err := Split(tcp4, h, out, sizes, -1); err != ErrShortBuffer {
			t.Fatalf("offset -1: %v", err)
		}
		if _, err := Split(tcp4, h, out, sizes, 2048-1000-54+1); err != ErrShortBuffer {
			t.Fatalf("offset leaves one byte too few: %v", err)
		}
		out[3] = out[3][:54+1000-1] // the last segment is full-sized too
		if _, err := Split(tcp4, h, out, sizes, 0); err != ErrShortBuffer {
			t.Fatalf("last buffer short: %v", err)
		}
		if _, err := Split(tcp4[:60], VirtioNetHdr{}, out[:1], sizes, 2048-59); err != ErrShortBuffer {
			t.Fatalf("gso none, short: %v", err)
		}
		if _, err := Split(tcp4[:60], VirtioNetHdr{}, nil, sizes, 0); err != ErrTooManySegments {
			t.Fatalf("gso none, no buffer: %v", err)
		}
	})
}
